import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport

/// `engage-sync define --plan`: what storing definitions would send, before anything is stored.
@Suite("define --plan through the CLI")
struct PlanCommandTests {
    @Test("a redefinition: its exits and those of the audience built on it, the guardrail's verdict, nothing stored; define then says the same after storing, and the run does as planned")
    func redefinition() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com',
                       jsonb_build_object('plan', CASE WHEN i <= 150 THEN 'pro' ELSE 'enterprise' END)
                FROM generate_series(1, 200) i;
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at)
                SELECT 'e' || i, 'p' || i, 'Order Completed', '2026-05-30T00:00:00Z' FROM generate_series(1, 40) i;
                """)
            let now = ["ENGAGE_SYNC_NOW": "2026-06-01T12:00:00Z"]
            let paying = #"{"name": "Paying", "key": "paying", "type": "audience", "condition": {"trait": "plan", "one_of": ["pro", "enterprise"]}}"#
            let buyers = #"{"name": "Paying Buyers", "key": "paying_buyers", "type": "audience", "condition": {"all": [{"audience": "paying"}, {"event": "Order Completed", "within": "30d"}]}}"#
            let other = #"{"name": "Everyone", "key": "everyone", "type": "audience", "condition": {"trait": "plan", "exists": true}}"#
            try await f.define("[\(paying), \(buyers), \(other)]")
            #expect(try await f.cli(["run"], environment: now).status == 0)

            // Enterprise only: 150 of 200 leave paying (75%, past the guardrail), 40 of 40 leave paying_buyers.
            let narrower = try temporaryFile("[\(paying.replacingOccurrences(of: #"["pro", "enterprise"]"#, with: #"["enterprise"]"#)), \(other)]")
            let plan = try await f.cli(["define", "--plan", narrower], environment: now)
            #expect(plan.status == 0, "\(plan.stderr)")
            for line in ["changed paying", "unchanged everyone", "paying → vero: the guardrail would BLOCK it",
                         "paying_buyers → vero (built on a changed audience): incremental run would send +0 entered, -40 exited, 0 changed"] {
                #expect(plan.stdout.contains(line), "\(line) not in:\n\(plan.stdout)")
            }
            #expect(!plan.stdout.contains("everyone → vero"), "an unchanged definition is not planned")
            let stored = try await f.db.query("SELECT definition::text AS d FROM engage.computations WHERE key = 'paying'").first?["d"]
            #expect(stored?.contains("\"pro\"") == true, "nothing stored")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_runs") == 3, "no run recorded")

            // A narrower change within the guardrail: the plan's counts are what the run then does.
            let pro = try temporaryFile(paying.replacingOccurrences(of: #"["pro", "enterprise"]"#, with: #"["pro"]"#))
            let json = try await f.cli(["define", "--plan", "--json", pro], environment: now)
            let pairs = try #require(try JSONValue.parse(json.stdout)["pairs"]?.arrayValue, "\(json.stdout)\(json.stderr)")
            let planned = Dictionary(uniqueKeysWithValues: pairs.map { ($0["key"]?.stringValue ?? "?", $0) })
            #expect(planned["paying"]?["exited"] == 50 && planned["paying"]?["status"] == "planned", "\(json.stdout)")
            #expect(planned["paying_buyers"]?["exited"] == 0 && planned["paying_buyers"]?["entered"] == 0)
            // define stores it and says the same.
            let defined = try await f.cli(["define", pro], environment: now)
            #expect(defined.status == 0 && defined.stdout.contains("updated   paying")
                    && defined.stdout.contains("paying → vero: incremental run would send +0 entered, -50 exited, 0 changed"),
                    "\(defined.stdout)\(defined.stderr)")
            #expect(try await f.cli(["run", "--all"], environment: now).status == 0)
            let ran = try await f.db.query("""
                SELECT c.key, r.entered, r.exited, r.changed FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                WHERE r.id > 3 AND c.key IN ('paying', 'paying_buyers')
                """)
            for row in ran {
                let key = try row.decode(String.self, "key")
                for field in ["entered", "exited", "changed"] {
                    #expect(planned[key]?[field] == .int(try row.decode(Int.self, field)), "\(key) \(field)")
                }
            }
            #expect(ran.count == 2)
        }
    }

    @Test("bad input: a file with problems is refused as define refuses it (exit 2); --plan with --dry-run, --json without --plan")
    func badInput() async throws {
        try await SyncFixture.with { f in
            let bad = try temporaryFile(#"{"name": "Broken", "type": "audience", "condition": {"any": []}}"#)
            let refused = try await f.cli(["define", "--plan", bad])
            #expect(refused.status == 2 && refused.stderr.contains("condition.any: must have at least one condition"), "\(refused.stderr)")
            #expect(try await f.cli(["define", "--plan", "--dry-run", bad]).status == 2)
            #expect(try await f.cli(["define", "--json", bad]).status == 2)
        }
    }
}
