import EngageCore
import Testing

@Suite("Secret: a value that does not print")
struct SecretTests {
    struct Configuration { var name = "serve"; var token: Secret? = Secret("s3cret-ü\"\\") }

    @Test("description, debugDescription, interpolation and dump, alone or inside another value, show <redacted>")
    func neverPrinted() {
        let configuration = Configuration()
        var dumped = ""
        dump(configuration, to: &dumped)
        let printed = ["\(configuration)", String(reflecting: configuration), "\(configuration.token!)",
                       String(describing: configuration.token), dumped]
        for text in printed {
            #expect(!text.contains("s3cret"), "\(text)")
        }
        #expect(dumped.contains("<redacted>"))
        #expect(configuration.token?.revealed == "s3cret-ü\"\\")
    }

    @Test("matches only the same text; an empty secret matches nothing")
    func matches() {
        #expect(Secret("abc").matches("abc"))
        #expect(!Secret("abc").matches("abd") && !Secret("abc").matches("ab") && !Secret("abc").matches("abcd"))
        #expect(!Secret("").matches(""))
        #expect(Secret(environment: "X", ["X": ""]) == nil && Secret(environment: "X", ["X": "v"])?.revealed == "v")
    }
}
