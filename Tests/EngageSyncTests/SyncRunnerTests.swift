import AsyncHTTPClient
import EngageCore
import EngageStore
import EngageSync
import Foundation
import PostgresClient
import Testing
import TestSupport

/// The runner in process: one run of what is due, its pairs side by side when asked, each
/// after the audiences it refers to.
@Suite("SyncRunner: run what is due")
struct SyncRunnerTests {
    func define(_ f: SyncFixture, _ json: String) async throws {
        let path = try temporaryFile(json, suffix: ".json")
        _ = try await DefinitionService(f.db, sql: SQLSource(conninfo: f.url)).define(files: [path], dryRun: false)
    }

    func runs(_ f: SyncFixture, _ key: String) async throws -> Int {
        try await f.count("""
            SELECT count(*)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
            WHERE c.key = \(key) AND r.evaluate_ms IS NOT NULL
            """)
    }

    @Test("maxConcurrentRuns: pairs are planned side by side while one waits, and an audience built on another runs after it")
    func sideBySide() async throws {
        try await SyncFixture.with { f in
            try await f.seedPlansAndVIPs()
            // The SQL audience's query waits for an advisory lock this test holds: the others
            // can only be planned meanwhile if they run beside it.
            try await define(f, """
                [{"name": "VIPs", "key": "vips", "type": "audience",
                  "sql": "SELECT v.id AS user_id FROM app.vips v CROSS JOIN LATERAL (SELECT pg_advisory_lock_shared(4242)) l"},
                 {"name": "Pro VIPs", "key": "a_pro_vips", "type": "audience", "condition": {"all": [{"audience": "vips"}, {"trait": "plan", "equals": "pro"}]}},
                 {"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}},
                 {"name": "Free", "key": "free", "type": "audience", "condition": {"trait": "plan", "equals": "free"}}]
                """)
            try await f.db.execute("SELECT pg_advisory_lock(4242)")
            let pool = PostgresConnectionPool(conninfo: f.url, maxConnections: 8)
            var request = SyncRequest()
            request.noDeliver = true
            request.maxConcurrentRuns = 3
            let run = Task { try await SyncRunner(pool: pool, client: HTTPClient.shared).run(request) }
            try await eventually(seconds: 120, "pro and free planned while vips waits") {
                let pro = try await runs(f, "pro"), free = try await runs(f, "free")
                return pro == 1 && free == 1
            }
            #expect(try await runs(f, "vips") == 0)
            #expect(try await runs(f, "a_pro_vips") == 0, "it waits for the audience it refers to")
            try await f.db.execute("SELECT pg_advisory_unlock(4242)")
            let outcomes = try await run.value
            await pool.close()
            #expect(outcomes.count == 4 && outcomes.allSatisfy { $0.status == .succeeded }, "\(outcomes.map { ($0.key, $0.status, $0.message) })")
            #expect(Set(outcomes.map(\.key)) == ["vips", "a_pro_vips", "pro", "free"])
            // a_pro_vips sorts first, yet ran after vips: its first run already had the 20 pro VIPs.
            let members = try await f.db.query("""
                SELECT c.key, r.members, r.status FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                """)
            let byKey = Dictionary(uniqueKeysWithValues: try members.map { (try $0.decode(String.self, "key"), try $0.decode(Int.self, "members")) })
            #expect(byKey == ["vips": 40, "a_pro_vips": 20, "pro": 50, "free": 50])
            let held = try await f.db.query("SELECT c.key, count(*)::int AS n FROM engage.memberships m JOIN engage.computations c ON c.id = m.computation_id GROUP BY 1")
            let perKey = Dictionary(uniqueKeysWithValues: try held.map { (try $0.decode(String.self, "key"), try $0.decode(Int.self, "n")) })
            #expect(perKey == byKey, "the snapshot holds what each run counted")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status <> 'succeeded'") == 0)
        }
    }

    @Test("a run asked to stop starting leaves the pairs not started for the next run; the ones started are recorded")
    func stopStarting() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 10) i;
                """)
            try await define(f, """
                [{"name": "A", "key": "a", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}},
                 {"name": "B", "key": "b", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}},
                 {"name": "C", "key": "c", "type": "audience", "condition": {"trait": "plan", "equals": "free"}}]
                """)
            let pool = PostgresConnectionPool(conninfo: f.url, maxConnections: 8)
            for lanes in [1, 2] {
                let started = Counter()
                var progress = SyncProgress()
                progress.planned = { _, _, _ in started.next() }
                progress.stopStarting = { started.value >= 1 }
                var request = SyncRequest()
                request.noDeliver = true
                request.all = true
                request.maxConcurrentRuns = lanes
                let outcomes = try await SyncRunner(pool: pool, client: HTTPClient.shared).run(request, progress: progress)
                #expect(!outcomes.isEmpty && outcomes.count < 3, "lanes \(lanes): \(outcomes.map(\.key))")
                #expect(outcomes.allSatisfy { $0.status == .succeeded })
            }
            await pool.close()
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status <> 'succeeded'") == 0)
        }
    }

    @Test("a run that fills a snapshot the planner's statistics do not know analyzes it once; an incremental run does not")
    func statisticsKnowEverySnapshot() async throws {
        try await SyncFixture.with { f in
            try await f.seedPlansAndVIPs()
            // Autovacuum off: what the statistics know is what the runs did.
            try await f.db.execute("ALTER TABLE engage.memberships SET (autovacuum_enabled = off)")
            try await define(f, """
                [{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}},
                 {"name": "Free", "key": "free", "type": "audience", "condition": {"trait": "plan", "equals": "free"}}]
                """)
            let pool = PostgresConnectionPool(conninfo: f.url, maxConnections: 4)
            func run(_ key: String) async throws -> PairOutcome {
                var request = SyncRequest()
                request.keys = [key]
                request.noDeliver = true
                return try #require(try await SyncRunner(pool: pool, client: HTTPClient.shared).run(request).first)
            }
            // Whether the statistics of the snapshot's computation_id name this definition.
            func known(_ key: String) async throws -> Bool {
                try await f.count("""
                    SELECT count(*)::int AS c FROM pg_stats s, engage.computations c
                    WHERE s.schemaname = 'engage' AND s.tablename = 'memberships' AND s.attname = 'computation_id'
                      AND c.key = \(key) AND c.id::text = ANY (s.most_common_vals::text::text[])
                    """) == 1
            }
            // The planner's estimate of the definition's snapshot rows (what the comparison is planned by).
            func estimated(_ key: String) async throws -> Int {
                let id = try await f.count("SELECT id::int AS c FROM engage.computations WHERE key = \(key)")
                let plan = try await f.db.query("EXPLAIN (FORMAT JSON) SELECT * FROM engage.memberships WHERE computation_id = \(id)")
                    .first?.decode(String.self, "QUERY PLAN") ?? ""
                return Int(plan.firstMatch(of: #/"Plan Rows": ([0-9]+)/#)?.1 ?? "") ?? -1
            }
            func rowsCounted() async throws -> Int {
                try await f.count("SELECT reltuples::int AS c FROM pg_class WHERE oid = 'engage.memberships'::regclass")
            }
            #expect(try await run("pro").evaluation?.kind == .full)
            #expect(try await known("pro"))
            #expect(try await !known("free"))
            #expect(try await run("free").evaluation?.kind == .full)
            #expect(try await known("free"))
            #expect(try await estimated("free") == 50)
            #expect(try await rowsCounted() == 100)
            // One more pro member: an incremental run, which leaves the statistics as they were.
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                VALUES ('p101', 'u101', 'u101@example.com', '{"plan": "pro"}')
                """)
            let incremental = try await run("pro")
            #expect(incremental.evaluation?.kind == .incremental)
            #expect(incremental.evaluation?.changed == 1)
            #expect(try await rowsCounted() == 100)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.memberships") == 101)
            await pool.close()
        }
    }
}
