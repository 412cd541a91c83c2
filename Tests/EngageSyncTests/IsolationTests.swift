import EngageCore
import Foundation
import Testing
import TestSupport

/// One bad definition stays one bad thing: the other pairs of the run sync and deliver.
@Suite("a failing pair fails alone")
struct IsolationTests {
    /// Nine plain audiences and, among them, a SQL audience whose 6.4 kB user id PostgreSQL
    /// refuses at run time (`54000 index row requires … bytes`).
    func defineTen(_ f: SyncFixture) async throws {
        try await f.db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email, traits)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 20) i
            """)
        for n in 1...4 {
            try await f.define(#"{"name": "Pro \#(n)", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
        }
        try await f.define(#"""
            {"name": "Huge Id", "type": "audience",
             "sql": "SELECT string_agg(md5(i::text), '') AS user_id FROM generate_series(1, 200) i"}
            """#)
        for n in 5...9 {
            try await f.define(#"{"name": "Pro \#(n)", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
        }
    }

    /// Every good audience reached the sandbox for all 20 users; nothing is left `running`.
    func expectNineDelivered(_ f: SyncFixture) async throws {
        let users = try await f.sandboxUsers()
        for n in 1...9 {
            #expect((1...20).allSatisfy { users["u\($0)"]?.data["pro_\(n)"] == .bool(true) }, "pro_\(n)")
        }
        #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs WHERE status = 'running'") == 0)
        #expect(try await f.count("""
            SELECT count(*)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
            WHERE c.key = 'huge_id' AND r.status = 'failed' AND r.error LIKE '%index row%'
            """) >= 1)
    }

    @Test("run --all with one broken definition among ten: nine pairs sync and deliver, the broken one fails with its message")
    func runGoesOn() async throws {
        try await SyncFixture.with { f in
            try await defineTen(f)
            let run = try await f.cli(["run", "--all"])
            #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
            let lines = run.stdout.split(separator: "\n")
            #expect(lines.filter { $0.hasPrefix("pro_") && $0.contains("succeeded") }.count == 9, "\(run.stdout)")
            #expect(lines.contains { $0.hasPrefix("huge_id") && $0.contains("failed") }, "\(run.stdout)")
            #expect(run.stderr.contains("huge_id → vero") && run.stderr.contains("index row"), "\(run.stderr)")
            try await expectNineDelivered(f)
        }
    }

    @Test("serve with one broken definition among ten: the nine sync and deliver across three ticks")
    func serveGoesOn() async throws {
        try await SyncFixture.with { f in
            try await defineTen(f)
            let serving = ServeTests()
            let (process, out, err, _) = try await serving.serve(f)
            defer { if process.isRunning { process.terminate() } }
            // Three ticks' worth of runs of the broken pair (one per tick once it is due again).
            try await serving.eventually("the broken pair failed three times and the nine delivered") {
                let failures = try await f.count("""
                    SELECT count(*)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                    WHERE c.key = 'huge_id' AND r.status = 'failed'
                    """)
                let delivered = try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'")
                return failures >= 3 && delivered == 9 * 20
            }
            process.terminate()
            #expect(await CLI.collect(process, out, err).status == 0)
            try await expectNineDelivered(f)
        }
    }
}
