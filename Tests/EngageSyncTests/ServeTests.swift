import AsyncHTTPClient
import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// `engage-sync serve` (issue 15) through the real binary: it runs due pairs and delivers with
/// no other command, answers /healthz and /metrics, and shuts down gracefully on SIGTERM.
@Suite("serve: scheduler, delivery, /healthz, /metrics, graceful shutdown")
struct ServeTests {
    /// Starts `serve` on a free port; returns the process, its pipes and its base URL.
    func serve(_ f: SyncFixture, _ extra: [String] = []) async throws -> (Process, Pipe, Pipe, String) {
        let (process, out, err) = try CLI.start(["serve", "--port", "0", "--tick", "0.5", "--database-url", f.url] + extra,
                                                environment: [SyncFixture.tokenVariable: SyncFixture.token])
        // Its first line names the port; read it off the cooperative pool.
        let first = await CLI.offPool { String(decoding: out.fileHandleForReading.availableData, as: UTF8.self) }
        let url = try #require(first.firstRange(of: #/http://[0-9.]+:[0-9]+/#).map { String(first[$0]) }, "serve said: \(first)")
        return (process, out, err, url)
    }

    func get(_ url: String) async throws -> (status: Int, body: String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    /// Polls until `condition` holds (a bounded wait).
    func eventually(seconds: Double = 60, _ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("timed out waiting for \(what)")
    }

    @Test("serve syncs what is due and delivers it, answers /healthz and /metrics, and exits 0 on SIGTERM")
    func syncsAndShutsDown() async throws {
        try await SyncFixture.with { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 300) i
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            let (process, out, err, url) = try await serve(f)
            try await eventually("the sandbox to hold the 300 members") {
                try await f.sandboxUsers().values.filter { $0.data["pro"] == .bool(true) }.count == 300
            }
            let health = try await get(url + "/healthz")
            #expect(health.status == 200 && health.body == "ok\n")
            let metrics = try await get(url + "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains(#"engage_sync_members{key="pro"} 300"#), "\(metrics.body)")
            try await eventually("nothing to wait for") {
                try await get(url + "/metrics").body.contains(#"engage_sync_outbox_pending{destination="vero"} 0"#)
            }
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status = 'succeeded'") >= 1)

            kill(process.processIdentifier, SIGTERM)
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE locked_until > now()") == 0)
        }
    }

    @Test("/healthz is 503 while the database cannot be reached and 200 once it is back; serve keeps running")
    func health() async throws {
        try await SyncFixture.with { f in
            let (process, out, err, url) = try await serve(f)
            #expect(try await get(url + "/healthz").status == 200)
            // The database turns connections away, and every session of it but the fixture's is cut.
            let name = try #require(f.url.split(separator: "/").last.map(String.init))
            let admin = String(f.url.dropLast(name.count)) + "postgres"
            try await PostgresConnection.withConnection(admin) { db in
                try await db.execute("ALTER DATABASE \(unescaped: name) ALLOW_CONNECTIONS false")
                try await db.query("""
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(name) AND pid <> \(Int(f.db.backendPID))
                    """)
            }
            try await eventually(seconds: 30, "/healthz to say 503") {
                let health = try await get(url + "/healthz")
                return health.status == 503 && health.body.contains("PostgreSQL is unreachable")
            }
            try await PostgresConnection.withConnection(admin) { db in
                try await db.execute("ALTER DATABASE \(unescaped: name) ALLOW_CONNECTIONS true")
            }
            try await eventually(seconds: 30, "/healthz to say 200 again") { try await get(url + "/healthz").status == 200 }
            #expect(process.isRunning)
            kill(process.processIdentifier, SIGTERM)
            #expect(await CLI.collect(process, out, err).status == 0)
        }
    }

    @Test("SIGTERM during delivery to a slow sandbox: exit 0, what was answered is recorded, nothing left leased; a second serve sends the rest once")
    func shutdownDuringDelivery() async throws {
        try await SyncFixture.with(sandbox: SandboxConfiguration(latencyMilliseconds: 100), concurrency: 4) { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 400) i
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            let (process, out, err, _) = try await serve(f, ["--shutdown-timeout", "10"])
            try await eventually("some deliveries") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") >= 20
            }
            kill(process.processIdentifier, SIGTERM)
            let started = Date()
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(Date().timeIntervalSince(started) < 10)
            let answered = try await f.sandboxRequests().requests.filter { $0.status == 200 }.count
            let delivered = try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'")
            #expect(delivered == answered)
            #expect(delivered < 400, "the shutdown came before the end")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending' AND locked_until > now()") == 0)

            // A second serve finishes the rest, each row sent once.
            let (second, out2, err2, _) = try await serve(f)
            try await eventually("every row delivered") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 400
            }
            kill(second.processIdentifier, SIGTERM)
            #expect(await CLI.collect(second, out2, err2).status == 0)
            let requests = try await f.sandboxRequests().requests.filter { $0.status == 200 }
            #expect(requests.count == 400)
            #expect(Set(requests.compactMap(\.userID)).count == 400)
        }
    }
}
