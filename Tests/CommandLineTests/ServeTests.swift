import AsyncHTTPClient
import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// `engage-sync serve` through the real binary: it runs due pairs and delivers with
/// no other command, answers /healthz and /metrics, and shuts down gracefully on SIGTERM.
@Suite("serve: scheduler, delivery, /healthz, /metrics, graceful shutdown")
struct ServeTests {
    /// The value of the first sample of `name` whose labels include each of `labels`.
    func sample(_ text: String, _ name: String, _ labels: [String]) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(name + "{") && labels.allSatisfy($0.contains) }
            .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
    }


    @Test("serve syncs what is due and delivers it, answers /healthz and /metrics, and exits 0 on SIGTERM")
    func syncsAndShutsDown() async throws {
        try await SyncFixture.with { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 300) i
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            let (process, out, err, url) = try await f.serve()
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            try await eventually("the sandbox to hold the 300 members") {
                try await f.sandboxUsers().values.filter { $0.data["pro"] == .bool(true) }.count == 300
            }
            let health = try await HTTP.get(url + "/healthz")
            #expect(health.status == 200 && health.body == #"{"status":"ok"}"#)
            let metrics = try await HTTP.get(url + "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains(#"engage_sync_members{key="pro"} 300"#), "\(metrics.body)")
            try await eventually("nothing to wait for") {
                try await HTTP.get(url + "/metrics").body.contains(#"engage_sync_outbox_pending{destination="vero"} 0"#)
            }
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status = 'succeeded'") >= 1)
            // The counters say what the tables say.
            let text = try await HTTP.get(url + "/metrics").body
            func value(_ name: String, _ labels: [String]) -> Double? { sample(text, name, labels) }
            let runs = try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status = 'succeeded' AND mode = 'full'")
            #expect(value("engage_sync_runs_total", [#"key="pro""#, #"mode="full""#, #"status="succeeded""#]) == Double(runs))
            #expect(value("engage_sync_changes_total", [#"key="pro""#, #"op="enter""#]) == 300)
            #expect(value("engage_sync_deliveries_total", [#"destination="vero""#, #"result="delivered""#])
                    == Double(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'")))
            #expect(value("engage_sync_delivery_seconds_count", [#"destination="vero""#]) == 300)

            kill(process.processIdentifier, SIGTERM)
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE locked_until > now()") == 0)
        }
    }

    @Test("/healthz is 503 while the database cannot be reached and 200 once it is back; serve keeps running")
    func health() async throws {
        try await SyncFixture.with { f in
            let (process, out, err, url) = try await f.serve()
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            #expect(try await HTTP.get(url + "/healthz").status == 200)
            // The database turns connections away, and every session of it but the fixture's is cut.
            let name = try #require(f.url.split(separator: "/").last.map(String.init))
            let admin = String(f.url.dropLast(name.count)) + "postgres"
            try await PostgresConnection.withConnection(admin) { db in
                try await db.execute("ALTER DATABASE \(unescaped: name) ALLOW_CONNECTIONS false")
                try await db.query("""
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(name) AND pid <> \(Int(f.db.backendPID))
                    """)
            }
            try await eventually(seconds: 120, "/healthz to say 503") {
                let health = try await HTTP.get(url + "/healthz")
                return health.status == 503 && health.body.contains(#""status":"unavailable""#) && health.body.contains("PostgreSQL is unreachable")
            }
            try await PostgresConnection.withConnection(admin) { db in
                try await db.execute("ALTER DATABASE \(unescaped: name) ALLOW_CONNECTIONS true")
            }
            try await eventually(seconds: 120, "/healthz to say 200 again") { try await HTTP.get(url + "/healthz").status == 200 }
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
            // A short lease: whatever a shutdown under load leaves leased returns within seconds.
            let (process, out, err, _) = try await f.serve(["--shutdown-timeout", "15", "--lease", "5"])
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            try await eventually("some deliveries") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") >= 20
            }
            kill(process.processIdentifier, SIGTERM)
            // No clock: a shutdown that overran its timeout would be cancelled mid-flight, and
            // the answered-equals-recorded check below would catch the requests it cut off.
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0, "\(result.stderr)")
            let answered = try await f.sandboxRequests().requests.filter { $0.status == 200 }.count
            let delivered = try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'")
            #expect(delivered == answered)
            #expect(delivered < 400, "the shutdown came before the end")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending' AND locked_until > now()") == 0)

            // A second serve finishes the rest, each row sent once.
            let (second, out2, err2, _) = try await f.serve(["--lease", "5"], environment: ["ENGAGE_SYNC_LOG_LEVEL": "info"])
            defer { if second.isRunning { second.terminate() } } // also when an expectation throws
            // A bound on a hang, not a speed: under CI's load the second serve once sent 1 row/s.
            try await eventually(seconds: 300, "every row delivered") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 400
            }
            kill(second.processIdentifier, SIGTERM)
            let log = await CLI.collect(second, out2, err2)
            #expect(log.status == 0)
            let requests = try await f.sandboxRequests().requests.filter { $0.status == 200 }
            let rows = try await f.db.query("SELECT status, attempts, left(coalesce(last_error, ''), 80) AS e, count(*)::int AS n FROM engage.outbox GROUP BY 1, 2, 3")
                .map { $0.values.map { $0 ?? "NULL" }.joined(separator: " ") }
            #expect(requests.count == 400, "outbox: \(rows)\nthe second serve said: \(log.stderr.suffix(4000))")
            #expect(Set(requests.compactMap(\.userID)).count == 400)
        }
    }

    @Test("a second signal during a graceful shutdown exits at once, status 1, without waiting for the requests in flight")
    func secondSignal() async throws {
        // Each request takes the sandbox 25 s (the client waits 30): a shutdown that waited for
        // them would record them delivered, one that exits at once records none.
        try await SyncFixture.with(sandbox: SandboxConfiguration(latencyMilliseconds: 25_000), concurrency: 2) { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 20) i
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            let (process, out, err, _) = try await f.serve(["--shutdown-timeout", "60"], environment: ["ENGAGE_SYNC_LOG_LEVEL": "notice"])
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            try await eventually("rows claimed") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE locked_until > now()") >= 1
            }
            kill(process.processIdentifier, SIGTERM)
            // Two signals sent before the first is taken are one to the kernel: wait until it was heard.
            var said = ""
            while !said.contains("shutting down gracefully") {
                let chunk = await CLI.offPool { err.fileHandleForReading.availableData }
                if chunk.isEmpty { break }
                said += String(decoding: chunk, as: UTF8.self)
            }
            #expect(said.contains("SIGTERM: shutting down gracefully"), "\(said)")
            kill(process.processIdentifier, SIGINT)
            let result = await CLI.collect(process, out, err)
            // A graceful exit is status 0; this one is 1, and nothing was answered before it:
            // it did not wait for the requests in flight. (No bound on the clock: under the
            // whole suite's load, the second signal to the collected exit once took 18 s.)
            #expect(result.status == 1, "\(said)\(result.stderr)")
            #expect(result.stderr.contains("exiting at once"), "\(result.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 0)
        }
    }

    @Test("serve at trace level logs no secret: the webhook secret and the UI token are not in its configuration's dump")
    func secretsNotLogged() async throws {
        try await SyncFixture.with { f in
            let secret = "whsec-\(UUID().uuidString)", ui = "ui-\(UUID().uuidString)"
            let (process, out, err, url) = try await f.serve(environment: [
                "ENGAGE_WEBHOOK_SECRET": secret, "ENGAGE_UI_TOKEN": ui, "ENGAGE_SYNC_LOG_LEVEL": "trace"])
            #expect(try await HTTP.get(url + "/healthz").status == 200)
            kill(process.processIdentifier, SIGTERM)
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0)
            // The dump is there (so the test reads what it means to), without the values.
            #expect(result.stderr.contains("<redacted>"), "\(result.stderr.prefix(3000))")
            for value in [secret, ui, SyncFixture.token] {
                #expect(!result.stderr.contains(value) && !result.stdout.contains(value), "\(value) was printed")
            }
        }
    }

    @Test("webhooks: each Vero type stored once though posted twice, wrong secret 401, malformed 400, unknown users created, and an Email Opened audience fills")
    func webhooks() async throws {
        try await SyncFixture.with { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, 3) i
                """)
            let secret = "s3cret-\(UUID().uuidString.prefix(8))"
            let (process, out, err, url) = try await f.serve(environment: ["ENGAGE_WEBHOOK_SECRET": secret])
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            let hook = url + "/webhooks/vero?secret=" + secret
            let at = Int(Date().timeIntervalSince1970) - 3600
            func payload(_ type: String, user: String = #"{"id": "u1", "email": "u1@example.com"}"#) -> String {
                #"{"type": "\#(type)", "user": \#(user), "campaign": {"id": 7, "name": "Spring", "subject": "Hello"}, "message_id": "vm-1", "\#(type)_at": \#(at), "url": "https://shop.example/sale", "bounce_type": "hard"}"#
            }
            let expected = ["sent": "Email Sent", "delivered": "Email Delivered", "opened": "Email Opened",
                            "clicked": "Email Link Clicked", "bounced": "Email Bounced", "unsubscribed": "Email Unsubscribed",
                            "complained": "Email Marked as Spam", "converted": "Email Converted"]
            for (type, name) in expected {
                let first = try await HTTP.post(hook, payload(type))
                #expect(first.status == 200 && first.body.contains(#""stored":true"#) && first.body.contains(name), "\(type): \(first)")
                let again = try await HTTP.post(hook, payload(type))
                #expect(again.status == 200 && again.body.contains(#""stored":false"#), "\(type): \(again)")
            }
            let stored = try await f.db.query("SELECT event FROM engage.events WHERE profile_id = 'p1'").map { try $0.decode(String.self, "event") }
            #expect(stored.sorted() == expected.values.sorted())
            let clicked = try #require(try await f.db.query("""
                SELECT properties->>'link_url' AS url, properties->>'email_subject' AS subject, properties->>'campaign_name' AS campaign,
                       properties->>'email_id' AS email_id, occurred_at FROM engage.events WHERE event = 'Email Link Clicked'
                """).first)
            #expect(clicked["url"] == "https://shop.example/sale" && clicked["subject"] == "Hello" && clicked["campaign"] == "Spring")
            #expect(clicked["email_id"] == "vm-1")
            #expect(Int(try clicked.decode(Date.self, "occurred_at").timeIntervalSince1970) == at)

            // Refused, nothing stored.
            let events = try await f.count("SELECT count(*)::int AS c FROM engage.events")
            #expect(try await HTTP.post(url + "/webhooks/vero?secret=wrong", payload("opened")).status == 401)
            #expect(try await HTTP.post(url + "/webhooks/vero", payload("opened")).status == 401)
            #expect(try await HTTP.post(url + "/webhooks/vero", payload("opened", user: #"{"id": "u2"}"#),
                                   headers: [("Authorization", "Bearer \(secret)")]).status == 200)
            let malformed = try await HTTP.post(hook, #"{"type": "opened", "user": "#)
            #expect(malformed.status == 400 && malformed.body.contains("not JSON"), "\(malformed)")
            #expect(try await HTTP.post(hook, #"{"type": "opened", "user": {}}"#).status == 400)
            #expect(try await HTTP.post(hook, String(repeating: " ", count: 1_100_000) + payload("opened")).status == 400)
            // What could never be stored is a 400 (Vero retries a 5xx for ever), said in the log.
            let nul = try await HTTP.post(hook, #"{"type": "opened", "user": {"id": "u2"}, "campaign": {"name": "a\u0000b"}}"#)
            #expect(nul.status == 400 && nul.body.contains("NUL"), "\(nul)")
            let huge = try await HTTP.post(hook, #"{"type": "opened", "user": {"id": "\#(String(repeating: "x", count: 900_000))"}}"#)
            #expect(huge.status == 400 && huge.body.contains("identifiers are limited to 1024 bytes"), "\(huge.status)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.events") == events + 1)

            // An unknown user becomes a profile; the audience fills from the events, end to end.
            #expect(try await HTTP.post(hook, payload("opened", user: #"{"id": "u9", "email": "u9@example.com"}"#)).status == 200)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles WHERE user_id = 'u9' AND email = 'u9@example.com'") == 1)
            // Defined now, so serve's next tick finds it due and syncs it.
            try await f.define(#"{"name": "Opened Recently", "type": "audience", "condition": {"event": "Email Opened", "within": "7d"}}"#)
            try await eventually("the audience to reach the sandbox") {
                let users = try await f.sandboxUsers()
                return ["u1", "u2", "u9"].allSatisfy { users[$0]?.data["opened_recently"] == .bool(true) }
            }
            #expect(try await f.sandboxUsers()["u3"]?.data["opened_recently"] == nil)
            kill(process.processIdentifier, SIGTERM)
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0)
            #expect(!result.stderr.contains(secret) && !result.stdout.contains(secret))
            #expect(result.stderr.contains("webhook refused (400)") && result.stderr.contains("NUL"), "\(result.stderr.suffix(3000))")
        }
    }

    @Test("the loop closed: the sandbox posts Vero's webhooks after each identify, serve stores them, an audience of openers fills")
    func loop() async throws {
        try await SyncFixture.with { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 50) i
                """)
            let secret = "loop-\(UUID().uuidString.prefix(8))"
            let (process, out, err, url) = try await f.serve(environment: ["ENGAGE_WEBHOOK_SECRET": secret])
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            let on = try await HTTP.post(f.sandbox.baseURL + "/_sandbox/webhooks", #"{"url": "\#(url)/webhooks/vero", "secret": "\#(secret)"}"#)
            #expect(on.status == 200)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            try await eventually("50 users' sent, delivered and opened events") {
                try await f.count("SELECT count(*)::int AS c FROM engage.events WHERE event IN ('Email Sent', 'Email Delivered', 'Email Opened')") == 150
            }
            try await f.define(#"{"name": "Opened an email in the last 7 days", "key": "opened_recently", "type": "audience", "condition": {"event": "Email Opened", "within": "7d"}}"#)
            try await eventually("the openers' audience in the sandbox") {
                try await f.sandboxUsers().values.filter { $0.data["opened_recently"] == .bool(true) }.count == 50
            }
            kill(process.processIdentifier, SIGTERM)
            #expect(await CLI.collect(process, out, err).status == 0)
        }
    }

    @Test("--max-concurrent-runs: pairs run side by side, a referring audience after the SQL audience it reads, in the same tick")
    func concurrentRuns() async throws {
        try await SyncFixture.with { f in
            try await f.seedPlansAndVIPs()
            try await f.define("""
                [{"name": "VIPs", "key": "vips", "type": "audience", "sql": "SELECT id AS user_id FROM app.vips"},
                 {"name": "Pro VIPs", "key": "a_pro_vips", "type": "audience", "condition": {"all": [{"audience": "vips"}, {"trait": "plan", "equals": "pro"}]}},
                 {"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}},
                 {"name": "Free", "key": "free", "type": "audience", "condition": {"trait": "plan", "equals": "free"}}]
                """)
            let (process, out, err, _) = try await f.serve(["--max-concurrent-runs", "3"])
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            try await eventually("every audience in the sandbox") {
                let users = try await f.sandboxUsers().values
                return users.filter { $0.data["pro"] == .bool(true) }.count == 50 && users.filter { $0.data["free"] == .bool(true) }.count == 50
                    && users.filter { $0.data["vips"] == .bool(true) }.count == 40
            }
            // a_pro_vips sorts first, yet ran after vips: its first run already had the 20 pro VIPs.
            let first = try #require(try await f.db.query("""
                SELECT r.members FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                WHERE c.key = 'a_pro_vips' ORDER BY r.id LIMIT 1
                """).first)
            #expect(try first.decode(Int.self, "members") == 20)
            kill(process.processIdentifier, SIGTERM)
            #expect(await CLI.collect(process, out, err).status == 0)
        }
    }

    @Test("a data change reaches the sandbox once sync_every has passed, with no other command; the counters match the tables after entries, exits, a 500-then-200 retry and a rejection")
    func changesArriveAndCountersMatch() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, CASE WHEN i = 7 THEN 'not-an-email' ELSE 'u' || i || '@example.com' END,
                       '{"plan": "pro"}'
                FROM generate_series(1, 60) i;
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "sync_every": "1m", "condition": {"trait": "plan", "equals": "pro"}}"#)
            let (process, out, err, url) = try await f.serve()
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            try await eventually("the first sync delivered") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status IN ('delivered', 'failed')") == 60
            }
            // Vero refused u7's malformed email (400): that row failed for good.
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'failed' AND last_status_code = 400") == 1)
            // Vero fails every request with 500 for a while; ten profiles leave, five come in.
            try await f.setFaults(#"{"fail_rate": 1.0, "fail_status": 500}"#)
            try await f.db.execute("""
                UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id IN (SELECT 'p' || i FROM generate_series(51, 60) i);
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(61, 65) i;
                """)
            // The next run comes when sync_every has passed since the first: no command is run.
            try await eventually(seconds: 120, "the second run's changes failing with 500") {
                try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE last_status_code = 500 AND status = 'pending'") >= 1
            }
            try await f.setFaults(#"{"fail_rate": 0}"#)
            try await eventually(seconds: 300, "the retries delivered") {
                let holders = try await f.sandboxUsers().values.filter { $0.data["pro"] == .bool(true) }.count
                let pending = try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending'")
                return holders == 54 && pending == 0 // 55 members; Vero refused u7
            }
            #expect(try await f.sandboxUsers()["u60"]?.data["pro"] == .bool(false))
            #expect(try await f.sandboxUsers()["u65"]?.data["pro"] == .bool(true))

            let text = try await HTTP.get(url + "/metrics").body
            // Prometheus text throughout: counters and the histogram (swift-prometheus) and the gauges.
            let parsed = try MetricsTests.parse(text, types: ["counter", "gauge", "histogram"], help: false)
            #expect(parsed.keys.contains { $0.hasPrefix("engage_sync_delivery_seconds_bucket{") })
            func value(_ name: String, _ labels: [String]) -> Double { sample(text, name, labels) ?? 0 }
            func table(_ sql: PostgresQuery) async throws -> Double { Double(try await f.count(sql)) }
            #expect(value("engage_sync_changes_total", [#"op="enter""#])
                    == (try await table("SELECT sum(entered)::int AS c FROM engage.sync_runs")))
            #expect(value("engage_sync_changes_total", [#"op="exit""#]) == 10)
            #expect(value("engage_sync_changes_total", [#"op="exit""#])
                    == (try await table("SELECT sum(exited)::int AS c FROM engage.sync_runs")))
            #expect(value("engage_sync_deliveries_total", [#"result="delivered""#])
                    == (try await table("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'")))
            #expect(value("engage_sync_deliveries_total", [#"result="failed""#]) == 1)
            let retried = try await table("""
                SELECT (sum(attempts) - count(*) FILTER (WHERE status IN ('delivered', 'failed')))::int AS c FROM engage.outbox
                """)
            #expect(retried >= 1)
            #expect(value("engage_sync_deliveries_total", [#"result="retried""#]) == retried)
            #expect(value("engage_sync_runs_total", [#"mode="incremental""#, #"status="succeeded""#])
                    + value("engage_sync_runs_total", [#"mode="incremental""#, #"status="partial""#])
                    == (try await table("SELECT count(*)::int AS c FROM engage.sync_runs WHERE mode = 'incremental' AND status IN ('succeeded', 'partial')")))
            kill(process.processIdentifier, SIGTERM)
            #expect(await CLI.collect(process, out, err).status == 0)
        }
    }

    @Test("/healthz is 503 while PostgreSQL is stopped and 200 once it is started again; serve keeps running")
    func healthWhilePostgresIsStopped() async throws {
        try await PrivateCluster.with { cluster in
            try await SyncFixture.with(server: cluster.url) { f in
                let (process, out, err, url) = try await f.serve()
                defer { if process.isRunning { process.terminate() } } // also when an expectation throws
                #expect(try await HTTP.get(url + "/healthz").status == 200)
                try await cluster.stopServer()
                try await eventually(seconds: 120, "/healthz to say 503") {
                    let health = try await HTTP.get(url + "/healthz")
                    return health.status == 503 && health.body.contains("PostgreSQL is unreachable")
                }
                try await cluster.startServer()
                try await eventually(seconds: 120, "/healthz to say 200 again") { try await HTTP.get(url + "/healthz").status == 200 }
                #expect(process.isRunning)
                kill(process.processIdentifier, SIGTERM)
                #expect(await CLI.collect(process, out, err).status == 0)
            }
        }
    }
}
