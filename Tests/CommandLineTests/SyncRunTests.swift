import AsyncHTTPClient
import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// End to end through the executable: define, run, resync, remove against the sandbox.
@Suite("Sync runs end to end")
struct SyncRunTests {
    static let audience = #"{"name": "Recent Buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "30d"}}"#
    static let trait = #"{"name": "Order Count", "type": "trait", "value": {"aggregate": "count", "event": "Order Completed", "within": "30d"}}"#

    /// Profiles p1…pN (user ids u1…uN); p1…pBuyers bought 3 days ago.
    func seed(_ f: SyncFixture, profiles: Int, buyers: Int) async throws {
        try await f.db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, \(profiles)) i
            """)
        try await f.db.query("""
            INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
            SELECT 'seed-' || i, 'p' || i, 'Order Completed', '{}', now() - interval '3 days' FROM generate_series(1, \(buyers)) i
            """)
    }

    /// The audience value the sandbox holds for each user id that has one.
    func sandboxValues(_ f: SyncFixture, key: String) async throws -> [String: JSONValue] {
        var values: [String: JSONValue] = [:]
        for (id, user) in try await f.sandboxUsers() { if let v = user.data[key] { values[id] = v } }
        return values
    }

    func requestCount(_ f: SyncFixture) async throws -> Int { try await f.sandboxRequests().total }

    @Test("first sync sends exactly the members; incremental sends exactly the changes; a quiet run sends nothing")
    func firstThenIncremental() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 50, buyers: 20)
            try await f.define(Self.audience)
            try await f.define(Self.trait)
            let first = try await f.cli(["run"])
            #expect(first.status == 0, "\(first.stdout)\n\(first.stderr)")
            #expect(first.stdout.contains("recent_buyers → vero: full run"))
            var values = try await sandboxValues(f, key: "recent_buyers")
            #expect(values.count == 20)
            #expect(values.values.allSatisfy { $0 == .bool(true) })
            #expect(try await sandboxValues(f, key: "order_count").count == 20)
            let snapshot = try await f.db.query("SELECT user_id FROM engage.audience_members WHERE key = 'recent_buyers'")
                .map { try $0.decode(String.self, "user_id") }
            #expect(Set(snapshot) == Set(values.keys))
            #expect(try await requestCount(f) == 40)

            // A quiet run sends nothing.
            let quiet = try await f.cli(["run", "--all"])
            #expect(quiet.status == 0, "\(quiet.stderr)")
            #expect(try await requestCount(f) == 40)

            // p1…p5 age out of the window, p21…p23 buy, p6 buys again (its count changes).
            try await f.db.execute("""
                UPDATE engage.events SET occurred_at = occurred_at - interval '40 days' WHERE profile_id IN ('p1','p2','p3','p4','p5');
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at)
                SELECT 'new-' || i, 'p' || i, 'Order Completed', now() - interval '1 hour' FROM generate_series(21, 23) i;
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('again-6', 'p6', 'Order Completed', now());
                """)
            let second = try await f.cli(["run", "--all"])
            #expect(second.status == 0, "\(second.stderr)")
            #expect(second.stdout.contains("+3 entered, -5 exited"))
            let requests = try await f.sandboxRequests().requests.dropFirst(40)
            let audienceChanges = requests.compactMap { r -> String? in
                guard let v = r.body["data"]?["recent_buyers"] else { return nil }
                return "\(r.userID ?? "?")=\(v.jsonString)"
            }
            #expect(Set(audienceChanges) == ["u1=false", "u2=false", "u3=false", "u4=false", "u5=false", "u21=true", "u22=true", "u23=true"])
            let traitChanges = requests.compactMap { r -> String? in
                guard let v = r.body["data"]?["order_count"] else { return nil }
                return "\(r.userID ?? "?")=\(v.jsonString)"
            }
            #expect(Set(traitChanges) == ["u1=0", "u2=0", "u3=0", "u4=0", "u5=0", "u6=2", "u21=1", "u22=1", "u23=1"])
            values = try await sandboxValues(f, key: "recent_buyers")
            #expect(values.filter { $0.value == .bool(true) }.count == 18)
            // The ledger equals what the sandbox holds.
            let ledger = try await f.db.query("""
                SELECT p.user_id, l.value::text AS value FROM engage.ledger l JOIN engage.profiles p USING (profile_id)
                JOIN engage.computations c ON c.id = l.computation_id WHERE c.key = 'recent_buyers'
                """)
            #expect(ledger.count == values.count)
            for row in ledger { #expect(values[try row.decode(String.self, "user_id")]?.jsonString == (try row.decode(String.self, "value"))) }
        }
    }

    @Test("the schedule: a pair is not due again until sync_every has passed")
    func schedule() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 5, buyers: 2)
            try await f.define(Self.audience)
            #expect(try await f.cli(["run"]).stdout.contains("full run"))
            let again = try await f.cli(["run"])
            #expect(again.stdout.contains("nothing is due"))
            try await f.db.execute("UPDATE engage.sync_runs SET started_at = started_at - interval '61 minutes', instant = instant - interval '61 minutes'")
            #expect(try await f.cli(["run"]).stdout.contains("incremental run"))
            // The schedule keeps the run's clock: with ENGAGE_SYNC_NOW an hour on, it is due, and
            // five minutes after that it is not, whatever the wall clock says.
            let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3_700))
            let later = ISO8601DateFormatter().string(from: Date().addingTimeInterval(4_000))
            #expect(try await f.cli(["run"], environment: ["ENGAGE_SYNC_NOW": now]).stdout.contains("incremental run"))
            // engage.sync_status says the same: next due a sync_every after that run's instant.
            let due = try await f.db.query("""
                SELECT s.next_due = \(now)::timestamptz + c.sync_every AS on_the_runs_clock
                FROM engage.sync_status s JOIN engage.computations c ON c.key = s.key
                """)
            #expect(due.count == 1 && due.allSatisfy { $0["on_the_runs_clock"] == "t" })
            #expect(try await f.cli(["run"], environment: ["ENGAGE_SYNC_NOW": later]).stdout.contains("nothing is due"))
        }
    }

    @Test("resync re-sends every member and false to ledger-true profiles that left")
    func resync() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 10, buyers: 6)
            try await f.define(Self.audience)
            #expect(try await f.cli(["run"]).status == 0)
            try await f.db.execute("DELETE FROM engage.events WHERE profile_id IN ('p1', 'p2')")
            let before = try await requestCount(f)
            let resync = try await f.cli(["resync", "--key", "recent_buyers"])
            #expect(resync.status == 0, "\(resync.stderr)")
            let sent = try await f.sandboxRequests().requests.dropFirst(before)
            #expect(sent.count == 6)
            #expect(Set(sent.map { "\($0.userID ?? "?")=\($0.body["data"]?["recent_buyers"]?.jsonString ?? "")" })
                == ["u1=false", "u2=false", "u3=true", "u4=true", "u5=true", "u6=true"])
        }
    }

    @Test("remove sends false to every delivered member; --keep-values sends nothing")
    func remove() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 10, buyers: 4)
            try await f.define(Self.audience)
            try await f.define(#"{"name": "Kept", "type": "audience", "condition": {"event": "Order Completed"}}"#)
            #expect(try await f.cli(["run"]).status == 0)
            let before = try await requestCount(f)
            let removed = try await f.cli(["remove", "recent_buyers"])
            #expect(removed.status == 0, "\(removed.stderr)")
            let sent = try await f.sandboxRequests().requests.dropFirst(before)
            #expect(Set(sent.map { "\($0.userID ?? "?")=\($0.body["data"]?["recent_buyers"]?.jsonString ?? "")" })
                == ["u1=false", "u2=false", "u3=false", "u4=false"])
            let kept = try await f.cli(["remove", "kept", "--keep-values"])
            #expect(kept.status == 0, "\(kept.stderr)")
            #expect(try await requestCount(f) == before + 4)
            #expect(try await sandboxValues(f, key: "kept").values.allSatisfy { $0 == .bool(true) })
        }
    }

    @Test("a run interrupted after the outbox commit loses nothing: the next run sends the rest once")
    func interruptedBeforeDelivery() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 30, buyers: 30)
            try await f.define(Self.audience)
            let enqueued = try await f.cli(["run", "--no-deliver"])
            #expect(enqueued.status == 0, "\(enqueued.stderr)")
            #expect(try await requestCount(f) == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_changelog WHERE status = 'pending'") == 30)
            let next = try await f.cli(["run", "--all"])
            #expect(next.status == 0, "\(next.stderr)")
            let requests = try await f.sandboxRequests().requests
            #expect(requests.count == 30)
            #expect(Set(requests.compactMap(\.userID)).count == 30)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox") == 30) // nothing enqueued twice
        }
    }

    @Test("a change that fails (500s) is retried by the next run; the ledger advances only when it succeeds")
    func failedThenRetried() async throws {
        try await SyncFixture.with(sandbox: SandboxConfiguration(failRate: 1, failStatus: 500)) { f in
            try await seed(f, profiles: 5, buyers: 5)
            try await f.define(Self.audience)
            let failing = try await f.cli(["run", "--max-wait", "0"])
            #expect(failing.status == 3, "\(failing.stdout)\n\(failing.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger") == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending' AND last_status_code = 500 AND attempts = 1") == 5)
            // The destination recovers.
            let healthy = try await VeroSandbox().start()
            try await f.db.query("UPDATE engage.destinations SET base_url = \(healthy.baseURL)")
            try await f.db.execute("UPDATE engage.outbox SET next_attempt_at = now()")
            let retry = try await f.cli(["run", "--all"])
            #expect(retry.status == 0, "\(retry.stdout)\n\(retry.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger WHERE value = 'true'") == 5)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered' AND attempts = 2") == 5)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox") == 5)
            await healthy.stop()
        }
    }

    @Test("the guardrail blocks a run after the events table is emptied; --force lets it through")
    func guardrail() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 150, buyers: 150)
            try await f.define(Self.audience)
            #expect(try await f.cli(["run"]).status == 0)
            try await f.db.execute("DELETE FROM engage.events")
            let before = try await requestCount(f)
            let blocked = try await f.cli(["run", "--all"])
            #expect(blocked.status == 3)
            #expect(blocked.stdout.contains("BLOCKED"))
            #expect(blocked.stdout.contains("150 of 150"))
            #expect(try await requestCount(f) == before)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status = 'blocked' AND exited = 150") == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE op = 'exit'") == 0)
            let forced = try await f.cli(["run", "--all", "--force"])
            #expect(forced.status == 0, "\(forced.stderr)")
            #expect(try await requestCount(f) == before + 150)
        }
    }

    @Test("two run processes started together send every change once")
    func concurrentRuns() async throws {
        try await SyncFixture.with(sandbox: SandboxConfiguration(latencyMilliseconds: 1)) { f in
            try await seed(f, profiles: 500, buyers: 400)
            try await f.define(Self.audience)
            try await f.define(Self.trait)
            async let a = f.cli(["run"])
            async let b = f.cli(["run"])
            let (ra, rb) = try await (a, b)
            #expect(ra.status == 0, "\(ra.stdout)\n\(ra.stderr)")
            #expect(rb.status == 0, "\(rb.stdout)\n\(rb.stderr)")
            let requests = try await f.sandboxRequests().requests
            #expect(requests.count == 800)
            let keys = requests.map { "\($0.userID ?? "?")|\($0.body["data"]?["recent_buyers"] != nil)" }
            #expect(Set(keys).count == 800)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status = 'running'") == 0)
        }
    }

    @Test("profiles without a user id are skipped with missing_user_id, visible in delivery_failures")
    func missingUserID() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 3, buyers: 3)
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, email) VALUES ('email-only', 'e@example.com');
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('e1', 'email-only', 'Order Completed', now());
                """)
            try await f.define(Self.audience)
            // With --strict a skip counts as undelivered: partial, exit 3.
            let run = try await f.cli(["run", "--strict"])
            #expect(run.status == 3)
            #expect(run.stdout.contains("partial") && run.stdout.contains("1 skipped (missing_user_id)"), "\(run.stdout)")
            #expect(try await requestCount(f) == 3)
            let failure = try #require(try await f.db.query("SELECT profile_id, status, reason FROM engage.delivery_failures").first)
            #expect(try failure.decode(String.self, "profile_id") == "email-only")
            #expect(try failure.decode(String.self, "status") == "skipped")
            #expect(try failure.decode(String.self, "reason") == "missing_user_id")
            // A second run does not enqueue the skip again.
            try await f.db.execute("UPDATE engage.sync_runs SET started_at = started_at - interval '2 hours'")
            _ = try await f.cli(["run"])
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'skipped'") == 1)
            // Without it a skip is an expected outcome: the run succeeded, with its count.
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, email) VALUES ('email-only-2', 'e2@example.com');
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('e2', 'email-only-2', 'Order Completed', now());
                """)
            let plain = try await f.cli(["run", "--all"])
            #expect(plain.status == 0, "\(plain.stdout)\n\(plain.stderr)")
            #expect(plain.stdout.contains("succeeded") && plain.stdout.contains("1 skipped (missing_user_id)"), "\(plain.stdout)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.delivery_failures WHERE reason = 'missing_user_id'") == 2)
        }
    }

    @Test("--dry-run prints what would change and writes nothing")
    func dryRun() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 10, buyers: 7)
            try await f.define(Self.audience)
            let fingerprint: PostgresQuery = """
                SELECT md5(string_agg(t, '|' ORDER BY t)) AS f FROM (
                    SELECT m::text AS t FROM engage.memberships m UNION ALL SELECT o::text FROM engage.outbox o
                    UNION ALL SELECT r::text FROM engage.sync_runs r UNION ALL SELECT l::text FROM engage.ledger l
                    UNION ALL SELECT 'x') rows
                """
            let before = try await f.db.query(fingerprint).first?.decode(String.self, "f")
            let dry = try await f.cli(["run", "--dry-run"])
            #expect(dry.status == 0, "\(dry.stderr)")
            #expect(dry.stdout.contains("full would send: 7 members, +7 entered, -0 exited"))
            #expect(dry.stdout.contains("enter u1 = true"))
            #expect(try await f.db.query(fingerprint).first?.decode(String.self, "f") == before)
            #expect(try await requestCount(f) == 0)
        }
    }

    @Test("status and the analyst views")
    func statusAndViews() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 10, buyers: 4)
            try await f.define(Self.audience)
            #expect(try await f.cli(["run"]).status == 0)
            let status = try await f.cli(["status", "--json"])
            #expect(status.status == 0, "\(status.stderr)")
            let parsed = try JSONValue.parse(status.stdout)
            let first = try #require(parsed.arrayValue?.first)
            #expect(first["key"] == "recent_buyers")
            #expect(first["members"] == .int(4))
            #expect(first["delivered_true"] == .int(4))
            #expect(first["last_run_status"] == "succeeded")
            let sizes = try #require(try await f.db.query("SELECT members::int, delivered_true::int, pending::int FROM engage.audience_sizes").first)
            #expect(try sizes.decode(Int.self, "members") == 4)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_changelog WHERE status = 'delivered' AND op = 'enter'") == 4)
        }
    }
}
