import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// Incremental evaluation: what each run evaluates, when it evaluates in full, the
/// history, late commits, and destinations added later. The randomized search against a full
/// evaluation is in IncrementalSearchTests.
@Suite("Incremental evaluation")
struct IncrementalTests {
    static let recent = #"{"name": "Recent Buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "7d"}}"#
    static let t0 = "2026-06-01T12:00:00Z"

    /// Runs `engage-sync run --all` at `instant` (ENGAGE_SYNC_NOW); expects success.
    @discardableResult
    func run(_ f: SyncFixture, at instant: String, _ extra: [String] = []) async throws -> CLIRun {
        let run = try await f.cli(["run", "--all"] + extra, environment: ["ENGAGE_SYNC_NOW": instant])
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        return run
    }

    /// The last run of `key`: how it evaluated, how many profiles, the drift.
    func lastRun(_ f: SyncFixture, _ key: String) async throws -> (evaluation: String, affected: Int, drift: Int?) {
        let row = try #require(try await f.db.query("""
            SELECT r.evaluation, r.affected, r.drift FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
            WHERE c.key = \(key) ORDER BY r.id DESC LIMIT 1
            """).first)
        return (try row.decode(String.self, "evaluation"), try row.decode(Int.self, "affected"), try row.decode(Int?.self, "drift"))
    }

    /// Profiles p1…pN (user ids u1…uN); p1…pBuyers bought at `at` minus one day.
    func seed(_ f: SyncFixture, profiles: Int, buyers: Int, at: String = t0) async throws {
        try await f.db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, \(profiles)) i
            """)
        try await f.db.query("""
            INSERT INTO engage.events (message_id, profile_id, event, occurred_at)
            SELECT 'seed-' || i, 'p' || i, 'Order Completed', \(at)::timestamptz - interval '1 day' FROM generate_series(1, \(buyers)) i
            """)
    }

    func snapshot(_ f: SyncFixture, _ key: String) async throws -> Set<String> {
        Set(try await f.db.query("SELECT profile_id FROM engage.audience_members WHERE key = \(key)").map { try $0.decode(String.self, "profile_id") })
    }

    @Test("a run evaluates only what changed, windows included; the history records each change")
    func evaluatesWhatChanged() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 200, buyers: 50)
            // No reconciling (a full check) in the week this test spans.
            try await f.define(#"{"name": "Recent Buyers", "type": "audience", "reconcile_every": "30d", "condition": {"event": "Order Completed", "within": "7d"}}"#)
            try await run(f, at: Self.t0)
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full")
            #expect(try await snapshot(f, "recent_buyers").count == 50)

            // One new buyer, one hour later: one profile evaluated.
            try await f.db.execute("INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('n1', 'p100', 'Order Completed', '2026-06-01T12:30:00Z')")
            try await run(f, at: "2026-06-01T13:00:00Z")
            var last = try await lastRun(f, "recent_buyers")
            #expect(last.evaluation == "incremental")
            #expect(last.affected == 1)
            #expect(try await snapshot(f, "recent_buyers").count == 51)

            // Six days later the seeded orders (bought May 31, 12:00) leave the 7-day window with no
            // new event; only the 50 whose order crossed the edge are evaluated.
            try await run(f, at: "2026-06-07T12:00:00.000001Z")
            last = try await lastRun(f, "recent_buyers")
            #expect(last.evaluation == "incremental")
            #expect(last.affected == 50)
            #expect(try await snapshot(f, "recent_buyers") == ["p100"])
            let users = try await f.sandboxUsers()
            #expect(users["u1"]?.data["recent_buyers"] == .bool(false))
            #expect(users["u100"]?.data["recent_buyers"] == .bool(true))

            // The history: p1 entered with the first run and left with the last. Its value, held
            // from the first run's instant to the last's, left the snapshot for the history; p100
            // entered at 13:00 and holds it still: the snapshot says since when.
            let firstRun = try await f.count("SELECT min(r.id)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id WHERE c.key = 'recent_buyers'")
            let lastRunID = try await f.count("SELECT max(r.id)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id WHERE c.key = 'recent_buyers'")
            let history = try await f.db.query("""
                SELECT h.value::text AS value, h.since, h.until, h.since_run, h.until_run
                FROM engage.membership_history h JOIN engage.computations c ON c.id = h.computation_id
                WHERE c.key = 'recent_buyers' AND h.profile_id = 'p1'
                """)
            #expect(history.count == 1)
            let held = try #require(history.rows.first)
            #expect(held["value"] == "true")
            #expect(Timestamp(try held.decode(Date.self, "since")) == Timestamp.parse(Self.t0))
            #expect(Timestamp(try held.decode(Date.self, "until")) == Timestamp.parse("2026-06-07T12:00:00.000001Z"))
            #expect(try held.decode(Int?.self, "since_run") == firstRun)
            #expect(try held.decode(Int?.self, "until_run") == lastRunID)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.audience_members WHERE key = 'recent_buyers' AND profile_id = 'p1'") == 0)
            let p100 = try #require(try await f.db.query("SELECT since FROM engage.audience_members WHERE key = 'recent_buyers' AND profile_id = 'p100'").first)
            #expect(Timestamp(try p100.decode(Date.self, "since")) == Timestamp.parse("2026-06-01T13:00:00Z"))
            // Who was in at an instant: p1 on June 3, not on June 8; p100 not at 12:59, then.
            let june3 = Set(try await f.db.query("SELECT profile_id FROM engage.members_at('recent_buyers', '2026-06-03T00:00:00Z')").map { try $0.decode(String.self, "profile_id") })
            #expect(june3.count == 51 && june3.contains("p1") && june3.contains("p100"))
            let beforeP100 = Set(try await f.db.query("SELECT profile_id FROM engage.members_at('recent_buyers', '2026-06-01T12:59:59Z')").map { try $0.decode(String.self, "profile_id") })
            #expect(beforeP100.count == 50 && !beforeP100.contains("p100"))
            #expect(Set(try await f.db.query("SELECT profile_id FROM engage.members_at('recent_buyers', '2026-06-08T00:00:00Z')").map { try $0.decode(String.self, "profile_id") }) == ["p100"])

            // The log keeps only what some evaluation or pair has not seen yet.
            try await f.db.execute("INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('n2', 'p101', 'Order Completed', '2026-06-07T12:00:00Z')")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profile_changes") >= 1)
            try await run(f, at: "2026-06-07T12:05:00Z")
            // (The cluster's other databases' transactions hold the boundary back, so compare with it.)
            #expect(try await f.count("""
                SELECT count(*)::int AS c FROM engage.profile_changes
                WHERE xid < (SELECT min(pg_snapshot_xmin(seen)) FROM (SELECT seen FROM engage.evaluations
                                                                     UNION ALL SELECT seen FROM engage.pair_watermarks) s)
                """) == 0)
            #expect(try await snapshot(f, "recent_buyers") == ["p100", "p101"])
        }
    }

    @Test("full evaluation: first sync, changed definition, clock backwards, --full, resync, truncate, pruned log")
    func fullEvaluationTriggers() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 20, buyers: 10)
            try await f.define(Self.recent)
            try await run(f, at: Self.t0)
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full") // first sync
            try await run(f, at: "2026-06-01T12:05:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "incremental")
            try await f.define(#"{"name": "Recent Buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "14d"}}"#)
            try await run(f, at: "2026-06-01T12:10:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full") // definition changed
            try await run(f, at: "2026-06-01T12:05:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full") // clock moved backwards
            try await run(f, at: "2026-06-01T12:20:00Z", ["--full"])
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full")
            let resync = try await f.cli(["resync", "--key", "recent_buyers"], environment: ["ENGAGE_SYNC_NOW": "2026-06-01T12:25:00Z"])
            #expect(resync.status == 0, "\(resync.stderr)")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full")
            try await run(f, at: "2026-06-01T12:30:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "incremental")
            try await f.db.execute("TRUNCATE engage.events")
            try await run(f, at: "2026-06-01T12:35:00Z", ["--force"])
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full")
            #expect(try await snapshot(f, "recent_buyers").isEmpty)
            try await f.db.execute("""
                INSERT INTO engage.settings (key, value) VALUES ('profile_changes_pruned_below', (pg_current_xact_id()::text::bigint + 1000)::text)
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                """)
            try await run(f, at: "2026-06-01T12:40:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "full")
        }
    }

    @Test("reconcile_every: a full evaluation checks the snapshot; drift 0, or found, warned of and corrected when the log was tampered with")
    func drift() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 20, buyers: 5)
            try await f.define(#"{"name": "Recent Buyers", "type": "audience", "reconcile_every": "1h", "condition": {"event": "Order Completed", "within": "7d"}}"#)
            try await run(f, at: Self.t0)
            try await f.db.execute("INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('n6', 'p6', 'Order Completed', '2026-06-01T12:01:00Z')")
            try await run(f, at: "2026-06-01T12:30:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "incremental")
            // Reconciling with an honest log: nothing to correct.
            try await run(f, at: "2026-06-01T13:30:00Z")
            var last = try await lastRun(f, "recent_buyers")
            #expect(last.evaluation == "full")
            #expect(last.drift == 0)
            #expect(try await snapshot(f, "recent_buyers").count == 6)

            // Someone deletes the log: the incremental run cannot know p7 bought.
            try await f.db.execute("""
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('n7', 'p7', 'Order Completed', '2026-06-01T13:40:00Z');
                DELETE FROM engage.profile_changes;
                """)
            try await run(f, at: "2026-06-01T13:45:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "incremental")
            #expect(try await snapshot(f, "recent_buyers").count == 6)
            // The next reconcile finds it, says so, and corrects it.
            let reconcile = try await run(f, at: "2026-06-01T14:45:00Z")
            last = try await lastRun(f, "recent_buyers")
            #expect(last.evaluation == "full")
            #expect(last.drift == 1)
            #expect(reconcile.stdout.contains("differed from a full evaluation for 1 profiles"), "\(reconcile.stdout)")
            #expect(try await snapshot(f, "recent_buyers").count == 7)
            #expect(try await f.sandboxUsers()["u7"]?.data["recent_buyers"] == .bool(true))
        }
    }

    @Test("an event committed after the run read the log (its transaction began before) is seen by the next run")
    func lateCommit() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 10, buyers: 2)
            try await f.define(Self.recent)
            try await run(f, at: Self.t0)
            let late = try await PostgresConnection.connect(f.url)
            try await late.execute("BEGIN")
            try await late.execute("INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('late', 'p5', 'Order Completed', '2026-06-01T12:00:00Z')")
            try await run(f, at: "2026-06-01T12:10:00Z")
            #expect(!(try await snapshot(f, "recent_buyers").contains("p5")))
            try await late.execute("COMMIT")
            await late.close()
            try await run(f, at: "2026-06-01T12:20:00Z")
            #expect(try await lastRun(f, "recent_buyers").evaluation == "incremental")
            #expect(try await snapshot(f, "recent_buyers").contains("p5"))
            #expect(try await f.sandboxUsers()["u5"]?.data["recent_buyers"] == .bool(true))
        }
    }

    @Test("a destination added after many incremental runs gets a full diff; a failed delivery is retried by the next run")
    func secondDestinationAndRetry() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 30, buyers: 10)
            try await f.define(Self.recent)
            try await run(f, at: Self.t0)
            for step in 1...4 {
                try await f.db.query("INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES (\("m\(step)"), \("p\(10 + step)"), 'Order Completed', '2026-06-01T12:00:00Z')")
                try await run(f, at: "2026-06-01T12:0\(step):00Z")
                #expect(try await lastRun(f, "recent_buyers").evaluation == "incremental")
            }
            let other = try await VeroSandbox().start()
            _ = try await DestinationRepository(f.db).upsert(name: "second", settings: DestinationSettings(
                baseURL: other.baseURL, tokenEnv: SyncFixture.tokenVariable, rate: 10_000))
            try await run(f, at: "2026-06-01T12:10:00Z")
            let second = try await SyncFixture(db: f.db, url: f.url, sandbox: other, destination: f.destination).sandboxUsers()
            #expect(Set(second.filter { $0.value.data["recent_buyers"] == .bool(true) }.keys)
                    == Set((1...14).map { "u\($0)" }))

            // A delivery to the first destination fails (500s) and waits for its retry; the data
            // does not change again, yet the next run delivers it.
            try await f.setFaults(#"{"fail_rate": 1, "fail_status": 500}"#)
            try await f.db.execute("INSERT INTO engage.events (message_id, profile_id, event, occurred_at) VALUES ('r', 'p20', 'Order Completed', '2026-06-01T12:15:00Z')")
            let failing = try await f.cli(["run", "--all", "--max-wait", "0"], environment: ["ENGAGE_SYNC_NOW": "2026-06-01T12:20:00Z"])
            #expect(failing.status == 3, "\(failing.stdout)")
            #expect(try await f.sandboxUsers()["u20"] == nil)
            try await f.setFaults(#"{"fail_rate": 0}"#)
            try await f.db.execute("UPDATE engage.outbox SET next_attempt_at = now() WHERE status = 'pending'")
            try await run(f, at: "2026-06-01T12:25:00Z")
            #expect(try await f.sandboxUsers()["u20"]?.data["recent_buyers"] == .bool(true))
            await other.stop()
        }
    }

    @Test("a redefined, disabled or re-enabled audience re-evaluates in full, in the same run, every definition built on it")
    func referrersFollowARedefinition() async throws {
        try await SyncFixture.with { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, traits)
                SELECT 'p' || i, 'u' || i, jsonb_build_object('plan', CASE WHEN i <= 3 THEN 'pro' ELSE 'free' END)
                FROM generate_series(1, 10) i
                """)
            func planPro(_ value: String, enabled: Bool = true) -> String {
                #"{"name": "Plan", "key": "plan_pro", "type": "audience", "reconcile_every": "30d", "enabled": \#(enabled), "condition": {"trait": "plan", "equals": "\#(value)"}}"#
            }
            func plainRun(at instant: String, _ extra: [String] = []) async throws -> CLIRun {
                let run = try await f.cli(["run"] + extra, environment: ["ENGAGE_SYNC_NOW": instant])
                #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
                return run
            }
            try await f.define(planPro("pro"))
            try await f.define(#"{"name": "Ref", "key": "ref", "type": "audience", "reconcile_every": "30d", "condition": {"audience": "plan_pro"}}"#)
            try await f.define(#"{"name": "Ref 2", "key": "ref2", "type": "audience", "reconcile_every": "30d", "condition": {"not": {"audience": "ref"}}}"#)
            try await run(f, at: Self.t0)
            #expect(try await snapshot(f, "ref") == ["p1", "p2", "p3"])

            // Five minutes later nothing is due (sync_every 1h) but what was redefined and what is
            // built on it, transitively.
            try await f.define(planPro("free"))
            let redefined = try await plainRun(at: "2026-06-01T12:05:00Z")
            for key in ["plan_pro", "ref", "ref2"] {
                let last = try await lastRun(f, key)
                #expect(last.evaluation == "full", "\(key): \(redefined.stdout)")
            }
            let free = Set((4...10).map { "p\($0)" })
            #expect(try await snapshot(f, "ref") == free)
            #expect(try await snapshot(f, "ref2") == ["p1", "p2", "p3"])
            let users = try await f.sandboxUsers()
            #expect(users["u1"]?.data["ref"] == .bool(false) && users["u4"]?.data["ref"] == .bool(true))
            #expect(users["u1"]?.data["ref2"] == .bool(true) && users["u4"]?.data["ref2"] == .bool(false))
            let runs = try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs")

            // Nothing changed: nothing runs before its schedule.
            try await plainRun(at: "2026-06-01T12:10:00Z")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs") == runs)

            // Disabled, then re-enabled as it was: those built on it follow each time (naming the
            // audience runs them too); its own snapshot waits while it is disabled.
            try await f.define(planPro("free", enabled: false))
            try await f.db.execute(#"UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id = 'p1'"#)
            try await plainRun(at: "2026-06-01T12:15:00Z", ["--key", "ref"])
            #expect(try await lastRun(f, "ref").evaluation == "full")
            #expect(try await lastRun(f, "ref2").evaluation == "full")
            #expect(try await snapshot(f, "ref") == free.union(["p1"]))
            try await f.define(planPro("free"))
            try await plainRun(at: "2026-06-01T12:20:00Z", ["--key", "plan_pro"])
            for key in ["ref", "ref2"] { #expect(try await lastRun(f, key).evaluation == "full", "\(key)") }
            #expect(try await snapshot(f, "plan_pro") == free.union(["p1"]))
            #expect(try await snapshot(f, "ref2") == ["p2", "p3"])
        }
    }
}
