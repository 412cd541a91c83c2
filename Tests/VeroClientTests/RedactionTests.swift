import AsyncHTTPClient
import EngageCore
import Testing
@testable import VeroClient

@Suite("The auth token is cut from text a server sends back")
struct RedactionTests {
    @Test("the byte scan finds a needle anywhere, and nothing that is not there")
    func byteScan() {
        let hay = Array("abcabd-token-xyz".utf8)
        #expect(VeroTransport.contains(hay, Array("abd".utf8)))
        #expect(VeroTransport.contains(hay, Array("-xyz".utf8)))
        #expect(VeroTransport.contains(hay, Array("abcabd-token-xyz".utf8)))
        #expect(!VeroTransport.contains(hay, Array("abe".utf8)))
        #expect(!VeroTransport.contains(hay, Array("xyz!".utf8)))
        #expect(!VeroTransport.contains(hay, []))
        #expect(!VeroTransport.contains([], Array("a".utf8)))
    }

    @Test("a response echoing the token keeps its text with the token replaced")
    func echoed() {
        let transport = VeroTransport(client: HTTPClient.shared, endpoint: VeroEndpoint(
            baseURL: "http://127.0.0.1:1", token: Secret("tok-123"), requestTimeout: .seconds(1)))
        #expect(transport.redact(#"{"error": "bad auth_token tok-123 for tok-123"}"#) == #"{"error": "bad auth_token [redacted] for [redacted]"}"#)
        #expect(transport.redact(#"{"ok": true}"#) == #"{"ok": true}"#)
    }

    @Test("an echo of the token JSON-escaped or percent-encoded is cut too")
    func echoedEncoded() {
        let token = #"t"o\k ü/1+😀"#
        let transport = VeroTransport(client: HTTPClient.shared, endpoint: VeroEndpoint(
            baseURL: "http://127.0.0.1:1", token: Secret(token), requestTimeout: .seconds(1)))
        let echoes = [
            token,
            #"t\"o\\k ü/1+😀"#,                                   // JSON-escaped
            #"t\"o\\k \u00fc/1+\ud83d\ude00"#,                   // JSON-escaped, non-ASCII as \u
            #"t\"o\\k \u00FC/1+\uD83D\uDE00"#,                   // … in upper case
            "t%22o%5Ck%20%C3%BC%2F1%2B%F0%9F%98%80",                // percent-encoded
            "t%22o%5ck%20%c3%bc%2f1%2b%f0%9f%98%80",                // … lower-case hex
            "t%22o%5Ck+%C3%BC%2F1%2B%F0%9F%98%80",                  // form-encoded
        ]
        // Encoders that leave only letters and digits alone encode "-" too.
        let dashed = VeroTransport(client: HTTPClient.shared, endpoint: VeroEndpoint(
            baseURL: "http://127.0.0.1:1", token: Secret("tok-1.2"), requestTimeout: .seconds(1)))
        #expect(dashed.redact("tok%2D1%2E2 tok%2d1%2e2 tok-1.2") == "[redacted] [redacted] [redacted]")
        for echo in echoes {
            let redacted = transport.redact("you sent {\"auth_token\": \"\(echo)\"} and \(echo).")
            #expect(redacted == "you sent {\"auth_token\": \"[redacted]\"} and [redacted].", "\(echo) → \(redacted)")
        }
    }

    @Test("what is recorded of an answer: a NUL replaced, at most 1 KiB")
    func recordable() {
        #expect(VeroTransport.recordable("a\u{0}b") == "a\u{FFFD}b")
        #expect(VeroTransport.recordable(String(repeating: "é", count: 1_000)).utf8.count <= 1_024)
        #expect(VeroTransport.isVeroSuccess(Array(#"{"status":200,"message":"Success."}"#.utf8)))
        #expect(!VeroTransport.isVeroSuccess(Array("<html>Welcome to nginx!</html>".utf8)))
        #expect(!VeroTransport.isVeroSuccess(Array(#"{"status":500}"#.utf8)))
        #expect(!VeroTransport.isVeroSuccess(Array(#"{"ok":true}"#.utf8)))
        for (text, blank) in [("", true), ("        \n\t  \r         ", true), ("          x", false), ("  x", false), ("\u{0}", false)] {
            #expect(Array(text.utf8).withUnsafeBytes { VeroTransport.isAllWhitespace($0) } == blank, "\(text.debugDescription)")
        }
    }
}
