import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

/// The write path of a full sync: a first sync or a resync leaves its members to a
/// backlog that delivery enqueues as it sends, and an outbox row stores what varies per change.
@Suite("The write path: backlogs and lean outbox rows")
struct WritePathTests {
    static let pro = #"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#

    func seed(_ f: SyncFixture, profiles: Int) async throws {
        try await f.db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email, traits)
            SELECT 'p' || lpad(i::text, 4, '0'), 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}'
            FROM generate_series(1, \(profiles)) i
            """)
    }

    @discardableResult
    func run(_ f: SyncFixture, _ arguments: [String], at instant: String) async throws -> String {
        let run = try await f.cli(arguments, environment: ["ENGAGE_SYNC_NOW": instant])
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        return run.stdout
    }

    @Test("a first sync writes a backlog, not a row per member; delivery enqueues it in batches and sends each member once")
    func backlog() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 2_500)
            try await f.define(Self.pro)
            let first = try await run(f, ["run", "--no-deliver"], at: "2026-06-01T12:00:00Z")
            #expect(first.contains("succeeded") && first.contains("pending 2500"), "\(first)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox") == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.backlogs") == 1)
            // The analyst sees the work waiting.
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_changelog WHERE status = 'pending' AND op = 'enter'") == 2_500)
            #expect(try await f.count("SELECT pending::int AS c FROM engage.audience_sizes WHERE key = 'pro'") == 2_500)
            #expect(try await f.count("SELECT pending::int AS c FROM engage.sync_status WHERE key = 'pro'") == 2_500)
            // One row per member: the snapshot row says since when (instant and run); nothing
            // was superseded, so the history is empty.
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.membership_history") == 0)
            #expect(try await f.count("""
                SELECT count(*)::int AS c FROM engage.memberships
                WHERE since = '2026-06-01T12:00:00Z' AND since_run = (SELECT min(id) FROM engage.sync_runs)
                """) == 2_500)

            // Meanwhile the data changes: p0001 leaves, p2500 too; an incremental run sends
            // nothing for them (they are still in the backlog, which reads the snapshot as it goes).
            try await f.db.execute(#"UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id IN ('p0001', 'p2500')"#)
            try await run(f, ["run", "--all", "--no-deliver"], at: "2026-06-01T12:05:00Z")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox") == 0)

            let deliver = try await f.cli(["deliver", "--max-wait", "0"])
            #expect(deliver.status == 0, "\(deliver.stdout)\n\(deliver.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.backlogs") == 0)
            #expect(try await f.count("SELECT pending::int AS c FROM engage.audience_sizes WHERE key = 'pro'") == 0)
            let requests = try await f.sandboxRequests().requests
            #expect(requests.count == 2_498)
            #expect(Set(requests.compactMap(\.userID)).count == 2_498)
            #expect(!requests.contains { $0.userID == "u1" || $0.userID == "u2500" })
            // Every row belongs to the first sync's run and carries no stored call.
            #expect(try await f.count("SELECT count(DISTINCT run_id)::int AS c FROM engage.outbox") == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE message IS NOT NULL OR call IS NULL") == 0)
            let holders = try await f.wrongHolders(key: "pro", exit: false)
            #expect(holders.sandbox.isEmpty && holders.ledger.isEmpty, "\(holders)")
        }
    }

    @Test("a full diff over members Vero already holds: delivery expands past them to the one that changed, in one pass")
    func unchangedStretch() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 5_000)
            try await f.db.execute(#"UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id = 'p4950'"#)
            try await f.define(Self.pro)
            try await run(f, ["run"], at: "2026-06-01T12:00:00Z")
            #expect(try await f.sandboxRequests().total == 4_999)
            // An ETL rebuilds the profiles table: the next run diffs every member (a backlog of
            // 5,000), and only p4950, now pro, is a change — after 4,949 that are not.
            try await f.db.execute("TRUNCATE engage.profiles CASCADE")
            try await seed(f, profiles: 5_000)
            let second = try await run(f, ["run", "--all"], at: "2026-06-01T12:05:00Z")
            #expect(second.contains("+1 entered") && second.contains("delivered 1,") && second.contains("pending 0"), "\(second)")
            #expect(try await f.sandboxRequests().total == 5_000)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.backlogs") == 0)
            let holders = try await f.wrongHolders(key: "pro", exit: false)
            #expect(holders.sandbox.isEmpty && holders.ledger.isEmpty, "\(holders)")
        }
    }

    @Test("while a backlog is open: members it already enqueued are diffed as usual, the rest wait for it; a resync goes through one too")
    func incrementalMeetsBacklog() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 3_000)
            try await f.define(Self.pro)
            try await run(f, ["run", "--no-deliver"], at: "2026-06-01T12:00:00Z")
            // Enqueue the first 1,000 members (as a delivery would), then change one on each side.
            #expect(try await BacklogStore(f.db).expand(for: f.destination, limit: 1_000).covered == 1_000)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending'") == 1_000)
            try await f.db.execute(#"UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id IN ('p0010', 'p2000')"#)
            try await run(f, ["run", "--all", "--no-deliver"], at: "2026-06-01T12:05:00Z")
            // p0010's pending true was superseded (it never reached Vero: nothing to exit); p2000
            // waits in the backlog.
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE profile_id = 'p0010' AND status = 'superseded'") == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE profile_id = 'p2000'") == 0)
            try await run(f, ["deliver", "--max-wait", "0"], at: "2026-06-01T12:06:00Z")
            var holders = try await f.wrongHolders(key: "pro", exit: false)
            #expect(holders.sandbox.isEmpty && holders.ledger.isEmpty, "\(holders)")
            #expect(try await f.sandboxRequests().total == 2_998)

            // A resync sends every member again, through a backlog as well, and p0010's profile
            // returning to pro is sent once.
            try await f.db.execute(#"UPDATE engage.profiles SET traits = '{"plan": "pro"}' WHERE profile_id = 'p0010'"#)
            let before = try await f.sandboxRequests().total
            try await run(f, ["resync", "--key", "pro"], at: "2026-06-01T12:10:00Z")
            #expect(try await f.sandboxRequests().total - before == 2_999)
            holders = try await f.wrongHolders(key: "pro", exit: false)
            #expect(holders.sandbox.isEmpty && holders.ledger.isEmpty, "\(holders)")
        }
    }
}
