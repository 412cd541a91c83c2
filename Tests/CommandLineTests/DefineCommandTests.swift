import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("define, list, preview, remove through the CLI")
struct DefineCommandTests {
    func count(_ db: PostgresConnection) async throws -> Int {
        try await db.query("SELECT count(*)::int AS c FROM engage.computations").first?.decode(Int.self, "c") ?? -1
    }

    @Test("a file with several mistakes: every one printed with its path, exit 2, nothing stored")
    func manyMistakes() async throws {
        try await TestDatabase.with { db, url in
            let good = try temporaryFile(#"{"name": "Fine Audience", "type": "audience", "condition": {"event": "E"}}"#)
            let bad = try temporaryFile("""
                [{"name": "Ok", "type": "audience", "condition": {"event": "E"}},
                 {"name": "Broken", "type": "audience", "condition": {"all": [{"event": "A", "count": {"at_least": -1}}, {"any": []}]}},
                 {"name": "T", "type": "trait", "value": {"aggregate": "sum", "event": "Order"}, "extra": 1}]
                """)
            let run = try await CLI.run(["define", good, bad, "--database-url", url])
            #expect(run.status == 2)
            #expect(run.stderr.contains("\(bad):[1].condition.all[0].count.at_least: must be a non-negative integer, got -1"))
            #expect(run.stderr.contains("\(bad):[1].condition.all[1].any: must have at least one condition"))
            #expect(run.stderr.contains("\(bad):[2].value.property: is required for the sum aggregate"))
            #expect(run.stderr.contains("\(bad):[2].extra: unknown field"))
            #expect(try await count(db) == 0)
        }
    }

    @Test("created, unchanged, updated; renaming needs the explicit key; tombstoned keys are never reused")
    func lifecycle() async throws {
        try await TestDatabase.with { db, url in
            let v1 = try temporaryFile(#"{"name": "Recent Buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "30d"}}"#)
            let first = try await CLI.run(["define", v1, "--database-url", url])
            #expect(first.status == 0, "\(first.stderr)")
            #expect(first.stdout.contains("created") && first.stdout.contains("recent_buyers"))
            let id = try await db.query("SELECT id FROM engage.computations WHERE key = 'recent_buyers'").first?.decode(Int.self, "id")

            let again = try await CLI.run(["define", v1, "--database-url", url])
            #expect(again.stdout.contains("unchanged"))

            let renamed = try temporaryFile(#"{"name": "Buyers (30 days)", "key": "recent_buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "30d"}}"#)
            let dry = try await CLI.run(["define", renamed, "--dry-run", "--database-url", url])
            #expect(dry.stdout.contains("would be updated"))
            #expect(try await db.query("SELECT name FROM engage.computations WHERE key = 'recent_buyers'").first?.decode(String.self, "name") == "Recent Buyers")
            let update = try await CLI.run(["define", renamed, "--database-url", url])
            #expect(update.stdout.contains("updated"))
            let after = try #require(try await db.query("SELECT id, name FROM engage.computations WHERE key = 'recent_buyers'").first)
            #expect(try after.decode(Int.self, "id") == id)
            #expect(try after.decode(String.self, "name") == "Buyers (30 days)")

            // Same derived key, different name, no explicit key: a collision, not a silent rename.
            let collide = try temporaryFile(#"{"name": "Recent-Buyers", "type": "audience", "condition": {"event": "X"}}"#)
            let collision = try await CLI.run(["define", collide, "--database-url", url])
            #expect(collision.status == 2)
            #expect(collision.stderr.contains("already belongs to"))

            let removed = try await CLI.run(["remove", "recent_buyers", "--database-url", url])
            #expect(removed.status == 0, "\(removed.stderr)")
            let reuse = try await CLI.run(["define", v1, "--database-url", url])
            #expect(reuse.status == 2)
            #expect(reuse.stderr.contains("never reused"))
            let list = try await CLI.run(["list", "--database-url", url])
            #expect(!list.stdout.contains("recent_buyers"))
        }
    }

    @Test("references: unknown audience and cycles are rejected; remove refuses a referenced audience")
    func references() async throws {
        try await TestDatabase.with { db, url in
            let a = try temporaryFile(#"{"name": "A", "type": "audience", "condition": {"audience": "b"}}"#)
            let unknown = try await CLI.run(["define", a, "--database-url", url])
            #expect(unknown.stderr.contains(#"refers to unknown audience "b""#))
            let b = try temporaryFile(#"{"name": "B", "type": "audience", "condition": {"event": "E"}}"#)
            #expect(try await CLI.run(["define", b, a, "--database-url", url]).status == 0)
            let cyclic = try temporaryFile(#"{"name": "B", "type": "audience", "condition": {"not": {"audience": "a"}}}"#)
            let cycle = try await CLI.run(["define", cyclic, "--database-url", url])
            #expect(cycle.status == 2)
            #expect(cycle.stderr.contains("cycle: b → a → b"))
            let remove = try await CLI.run(["remove", "b", "--database-url", url])
            #expect(remove.status == 2)
            #expect(remove.stderr.contains("used by a"))
        }
    }

    @Test("preview prints the member count and a sample, and writes nothing")
    func preview() async throws {
        try await TestDatabase.with { db, url in
            try await db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email) SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, 50) i;
                INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
                SELECT 'm' || i, 'p' || i, 'Order Completed', jsonb_build_object('total', i), now() - interval '1 day' FROM generate_series(1, 20) i;
                """)
            let defs = try temporaryFile("""
                [{"name": "Buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "7d"}},
                 {"name": "Order Count", "type": "trait", "value": {"aggregate": "count", "event": "Order Completed"}}]
                """)
            #expect(try await CLI.run(["define", defs, "--database-url", url]).status == 0)
            let fingerprint: PostgresQuery = """
                SELECT md5(string_agg(t, '|' ORDER BY t)) AS f FROM (
                    SELECT c::text AS t FROM engage.computations c UNION ALL SELECT m::text FROM engage.memberships m
                    UNION ALL SELECT o::text FROM engage.outbox o UNION ALL SELECT r::text FROM engage.sync_runs r
                    UNION ALL SELECT l::text FROM engage.ledger l UNION ALL SELECT p::text FROM engage.profiles p) rows
                """
            let before = try await db.query(fingerprint).first?.decode(String.self, "f")
            let audience = try await CLI.run(["preview", "buyers", "--limit", "3", "--database-url", url])
            #expect(audience.status == 0, "\(audience.stderr)")
            #expect(audience.stdout.contains("buyers: 20 members"))
            #expect(audience.stdout.contains("u1@example.com"))
            let trait = try await CLI.run(["preview", "order_count", "--database-url", url])
            #expect(trait.stdout.contains("order_count: 20 profiles have a value"))
            #expect(trait.stdout.contains("most common values"))
            let missing = try await CLI.run(["preview", "nope", "--database-url", url])
            #expect(missing.status == 2)
            let after = try await db.query(fingerprint).first?.decode(String.self, "f")
            #expect(before != nil && before == after)
            let computations = try await db.query("SELECT count(*)::int AS c FROM engage.computations").first?.decode(Int.self, "c")
            #expect(computations == 2)
        }
    }
}
