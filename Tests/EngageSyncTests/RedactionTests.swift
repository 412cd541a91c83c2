import AsyncHTTPClient
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
            baseURL: "http://127.0.0.1:1", token: "tok-123", requestTimeout: .seconds(1)))
        #expect(transport.redact(#"{"error": "bad auth_token tok-123 for tok-123"}"#) == #"{"error": "bad auth_token [redacted] for [redacted]"}"#)
        #expect(transport.redact(#"{"ok": true}"#) == #"{"ok": true}"#)
    }
}
