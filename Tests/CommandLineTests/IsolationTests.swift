import EngageCore
import Foundation
import Testing
import TestSupport

/// One bad definition stays one bad thing: the other pairs of the run sync and deliver.
@Suite("a failing pair fails alone")
struct IsolationTests {
    /// Nine plain audiences and, among them, one whose snapshot rows PostgreSQL refuses at run
    /// time (a trigger raises `22023`: an error of a class the engine does not expect, where a
    /// 6.4 kB user id's `54000 index row requires … bytes` was before identifiers were bounded);
    /// and a stored definition that no longer parses (edited in the table to a window over the
    /// 100-year bound, as one stored before the bound would be).
    func defineTen(_ f: SyncFixture) async throws {
        try await f.db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email, traits)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, 20) i
            """)
        for n in 1...4 {
            try await f.define(#"{"name": "Pro \#(n)", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
        }
        try await f.define(#"{"name": "Broken", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
        try await f.db.execute("""
            CREATE FUNCTION public.refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.computation_id = (SELECT id FROM engage.computations WHERE key = 'broken') THEN
                    RAISE EXCEPTION 'snapshot row refused by a trigger' USING ERRCODE = '22023';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_broken BEFORE INSERT ON engage.memberships FOR EACH ROW EXECUTE FUNCTION public.refuse_broken();
            """)
        for n in 5...9 {
            try await f.define(#"{"name": "Pro \#(n)", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
        }
        try await f.define(#"{"name": "Stale", "type": "audience", "condition": {"event": "Order Completed", "within": "7d"}}"#)
        try await f.db.execute("""
            UPDATE engage.computations SET definition = jsonb_set(definition, '{condition,within}', '"9999999w"') WHERE key = 'stale'
            """)
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
            WHERE c.key = 'broken' AND r.status = 'failed' AND r.error LIKE '%refused by a trigger%'
            """) >= 1)
    }

    @Test("run --all with one broken definition among ten, and one that no longer parses: nine pairs sync and deliver, the broken ones fail with their messages")
    func runGoesOn() async throws {
        try await SyncFixture.with { f in
            try await defineTen(f)
            let run = try await f.cli(["run", "--all"])
            #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
            let lines = run.stdout.split(separator: "\n")
            #expect(lines.filter { $0.hasPrefix("pro_") && $0.contains("succeeded") }.count == 9, "\(run.stdout)")
            #expect(lines.contains { $0.hasPrefix("broken") && $0.contains("failed") }, "\(run.stdout)")
            #expect(run.stdout.contains("stale → *") && run.stdout.contains("the stored definition stale no longer parses"), "\(run.stdout)")
            #expect(run.stderr.contains("→ ") && run.stderr.contains("error:"), "\(run.stderr)")
            #expect(run.stdout.contains("refused by a trigger"), "\(run.stdout)")
            // What reads definitions still works.
            let list = try await f.cli(["list"])
            #expect(list.status == 0 && list.stdout.contains("no: it no longer parses") && list.stdout.contains("pro_9"), "\(list.stdout)")
            #expect(try await f.cli(["status"]).status == 0)
            try await expectNineDelivered(f)
        }
    }

    @Test("serve with one broken definition among ten: the nine sync and deliver across three ticks")
    func serveGoesOn() async throws {
        try await SyncFixture.with { f in
            try await defineTen(f)
            let (process, out, err, _) = try await f.serve()
            defer { if process.isRunning { process.terminate() } }
            // Three ticks' worth of runs of the broken pair (one per tick once it is due again).
            try await eventually("the broken pair failed three times and the nine delivered") {
                let failures = try await f.count("""
                    SELECT count(*)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                    WHERE c.key = 'broken' AND r.status = 'failed'
                    """)
                let delivered = try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'")
                return failures >= 3 && delivered == 9 * 20
            }
            process.terminate()
            let served = await CLI.collect(process, out, err)
            #expect(served.status == 0)
            #expect(served.stderr.contains("the stored definition stale no longer parses"), "\(served.stderr.suffix(2000))")
            try await expectNineDelivered(f)
        }
    }
}
