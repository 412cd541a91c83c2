import EngageCore
@testable import EngageServer
import Foundation
import Hummingbird
import HummingbirdTesting
import PostgresClient
import Prometheus
import Testing
import TestSupport

/// `serve`'s routes in process (Hummingbird's test client, no socket): /healthz, /metrics,
/// /webhooks/vero and the status page's token and Host rules, against a real database.
@Suite("serve's routes, in process")
struct RoutesTests {
    /// The router over a pool on `url`, as `serve` builds it.
    func application(_ url: String, configure: (inout ServerConfiguration) -> Void = { _ in }) -> some ApplicationProtocol {
        var configuration = ServerConfiguration()
        configure(&configuration)
        let pool = PostgresConnectionPool(conninfo: url, maxConnections: 2)
        return Application(router: EngageServer.router(pool: pool, registry: PrometheusCollectorRegistry(), configuration: configuration))
    }

    @Test("/healthz: 200 while PostgreSQL answers, 503 naming the reason when it does not")
    func health() async throws {
        try await TestDatabase.with { _, url in
            try await application(url).test(.router) { client in
                try await client.execute(uri: "/healthz", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == #"{"status":"ok"}"#)
                }
            }
        }
        // Nothing listens on port 1.
        try await application("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2").test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(String(buffer: response.body).contains("PostgreSQL is unreachable"))
            }
        }
    }

    @Test("/metrics: the database-held gauges in Prometheus text")
    func metrics() async throws {
        try await TestDatabase.with { db, url in
            try await db.execute("INSERT INTO engage.destinations (name, base_url, token_env) VALUES ('vero', 'http://127.0.0.1:1', 'T')")
            try await application(url).test(.router) { client in
                try await client.execute(uri: "/metrics", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
                    #expect(String(buffer: response.body).contains(#"engage_sync_outbox_pending{destination="vero"} 0"#))
                }
            }
        }
    }

    @Test("/webhooks/vero: off without a secret; 401 without the right one; 400 for what can never be stored; 200 stored once")
    func webhooks() async throws {
        try await TestDatabase.with { db, url in
            let event = #"{"type": "opened", "user": {"id": "u1", "email": "u1@example.com"}, "campaign": {"id": 7, "name": "Spring"}, "message_id": "vm-1", "opened_at": 1767225600}"#
            try await application(url).test(.router) { client in
                try await client.execute(uri: "/webhooks/vero", method: .post, body: ByteBuffer(string: event)) { response in
                    #expect(response.status == .notFound)
                }
            }
            let secret = "hook-secret-\(UUID().uuidString)"
            try await application(url, configure: { $0.webhookSecret = Secret(secret) }).test(.router) { client in
                try await client.execute(uri: "/webhooks/vero?secret=wrong", method: .post, body: ByteBuffer(string: event)) { response in
                    #expect(response.status == .unauthorized)
                }
                let hook = "/webhooks/vero?secret=\(secret)"
                try await client.execute(uri: hook, method: .post, body: ByteBuffer(string: #"{"type": "opened", "user": "#)) { response in
                    #expect(response.status == .badRequest)
                }
                try await client.execute(uri: hook, method: .post, body: ByteBuffer(string: String(repeating: " ", count: 1_100_000) + event)) {
                    #expect($0.status == .badRequest, "over 1 MiB")
                }
                try await client.execute(uri: hook, method: .post, body: ByteBuffer(string: event)) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body).contains(#""stored":true"#))
                }
                try await client.execute(uri: "/webhooks/vero", method: .post, headers: [.authorization: "Bearer \(secret)"],
                                         body: ByteBuffer(string: event)) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body).contains(#""stored":false"#), "the same event twice is stored once")
                }
            }
            let stored = try await db.query("SELECT count(*)::int AS c FROM engage.events WHERE event = 'Email Opened'").first
            #expect(try stored?.decode(Int.self, "c") == 1)
        }
    }

    @Test("the status page: on loopback no token; with one, a bearer or the sign-in's session cookie; an unknown key is 404")
    func pageAccess() async throws {
        try await TestDatabase.with { _, url in
            try await application(url).test(.router) { client in
                // The test client names "localhost" (a DNS-rebound name is refused: CommandLineTests' defences).
                try await client.execute(uri: "/", method: .get) { #expect($0.status == .ok) }
                try await client.execute(uri: "/definitions/nothing", method: .get) {
                    #expect($0.status == .notFound)
                }
            }
            let token = "ui-token-\(UUID().uuidString)"
            try await application(url, configure: { $0.uiToken = Secret(token); $0.host = "0.0.0.0" }).test(.router) { client in
                try await client.execute(uri: "/", method: .get) { response in
                    #expect(response.status == .unauthorized)
                    #expect(String(buffer: response.body).contains(#"<form method=post action="/login">"#))
                }
                try await client.execute(uri: "/", method: .get, headers: [.authorization: "Bearer wrong"]) { #expect($0.status == .unauthorized) }
                try await client.execute(uri: "/", method: .get, headers: [.authorization: "Bearer \(token)"]) { #expect($0.status == .ok) }
                let form: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
                try await client.execute(uri: "/login", method: .post, headers: form, body: ByteBuffer(string: "token=guess")) {
                    #expect($0.status == .unauthorized && $0.headers[.setCookie] == nil)
                }
                let cookie = try await client.execute(uri: "/login", method: .post, headers: form, body: ByteBuffer(string: "token=\(token)")) {
                    response -> String in
                    #expect(response.status == .seeOther)
                    let cookie = try #require(response.headers[.setCookie])
                    #expect(cookie.contains("HttpOnly") && !cookie.contains(token), "a session value, not the token")
                    return String(cookie.prefix { $0 != ";" })
                }
                try await client.execute(uri: "/", method: .get, headers: [.cookie: cookie]) { #expect($0.status == .ok) }
                try await client.execute(uri: "/profiles?q=u1", method: .get) { #expect($0.status == .unauthorized, "profiles too") }
                try await client.execute(uri: "/", method: .get, headers: [.cookie: "\(EngageServer.cookieName)=guess"]) {
                    #expect($0.status == .unauthorized)
                }
            }
        }
    }

    @Test("profile pages: a search that finds nothing, an unknown profile and an unknown key are said so; a held value links to its explanation")
    func profilePages() async throws {
        try await TestDatabase.with { db, url in
            try await db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits) VALUES ('p1', 'u1', 'u1@example.com', '{"plan": "pro"}');
                INSERT INTO engage.computations (key, name, type, definition) VALUES ('pro', 'Pro', 'audience',
                    '{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}');
                INSERT INTO engage.memberships (computation_id, profile_id, value, since)
                SELECT id, 'p1', 'true', now() FROM engage.computations;
                """)
            try await application(url).test(.router) { client in
                try await client.execute(uri: "/profiles?q=nobody", method: .get) { response in
                    #expect(response.status == .ok && String(buffer: response.body).contains("id=nomatch"))
                }
                try await client.execute(uri: "/profiles?q=u1%40example.com", method: .get) { response in
                    let body = String(buffer: response.body)
                    #expect(body.contains(#"href="/profiles/p1""#) && !body.contains("u1@example.com"), "found by email, shown masked")
                }
                try await client.execute(uri: "/profiles/p1", method: .get) { response in
                    #expect(String(buffer: response.body).contains(#"href="/profiles/p1/explain/pro""#))
                }
                try await client.execute(uri: "/profiles/p1/explain/pro", method: .get) { response in
                    #expect(response.status == .ok && String(buffer: response.body).contains(": member"))
                }
                try await client.execute(uri: "/profiles/nobody", method: .get) { #expect($0.status == .notFound) }
                try await client.execute(uri: "/profiles/p1/explain/nope", method: .get) { #expect($0.status == .notFound) }
            }
        }
    }
}
