import Foundation
import Testing
import TestSupport
import VeroSandbox

@Suite("The sandbox checks requests as Vero does")
struct SandboxTests {
    @Test("auth, missing id, malformed email, tags without add/remove, heartbeat, reset")
    func validation() async throws {
        let running = try await VeroSandbox(configuration: SandboxConfiguration(token: "t")).start()
        let base = running.baseURL
        #expect(try await HTTP.post(base + "/api/v2/users/track", #"{"id": "1"}"#).status == 401)
        #expect(try await HTTP.post(base + "/api/v2/users/track", #"{"auth_token": "wrong", "id": "1"}"#).status == 401)
        #expect(try await HTTP.post(base + "/api/v2/users/track", #"{"auth_token": "t"}"#).status == 400)
        #expect(try await HTTP.post(base + "/api/v2/users/track", #"{"auth_token": "t", "id": "1", "email": "user@my"}"#).status == 400)
        #expect(try await HTTP.post(base + "/api/v2/users/tags/edit", #"{"auth_token": "t", "id": "1"}"#, method: .PUT).status == 400)
        #expect(try await HTTP.post(base + "/api/v2/events/track", #"{"auth_token": "t", "identity": {"id": "1"}}"#).status == 400)
        let ok = try await HTTP.post(base + "/api/v2/users/track", #"{"auth_token": "t", "id": "1", "email": "a@b.co", "data": {"x": true}}"#)
        #expect(ok.status == 200)
        #expect(ok.body.contains("Success"))
        #expect(try await HTTP.get(base + "/api/v2/heartbeat").status == 200)
        let text = try await HTTP.get(base + "/_sandbox/requests").body
        #expect(!text.contains("\"t\"") && !text.contains("wrong")) // tokens are not recorded
        #expect(try await HTTP.post(base + "/_sandbox/reset", "").status == 200)
        await running.stop()
    }
}
