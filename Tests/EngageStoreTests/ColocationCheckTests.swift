import Foundation
import PostgresClient
import Testing
import TestSupport

/// The colocation check (docs/scaling.md) on plans PostgreSQL makes for joins written to be
/// right and deliberately wrong: it must flag the wrong ones, through subqueries and CTEs too,
/// and pass the right ones.
@Suite("Colocation check")
struct ColocationCheckTests {
    func crossings(_ sql: String, _ db: PostgresConnection) async throws -> [String] {
        let text = try #require(try await db.query("EXPLAIN (VERBOSE, FORMAT JSON) \(unescaped: sql)").first?.decode(String.self, "QUERY PLAN"))
        let list = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        let plan = try #require(list.first?["Plan"] as? [String: Any])
        return ColocationCheck.crossings(inPlan: plan).sorted().map(\.description)
    }

    @Test("joins on profile_id pass; a join of per-profile tables on anything else is flagged, through subqueries and CTEs")
    func flagsBrokenJoins() async throws {
        try await TestDatabase.with { db, _ in
            try await db.execute("""
                CREATE TEMP TABLE engage_scope (profile_id text);
                CREATE TEMP TABLE engage_ids (vero_id text, profile_id text)
                """)
            #expect(try await crossings("""
                SELECT * FROM engage.memberships m JOIN engage.profiles p ON p.profile_id = m.profile_id
                WHERE m.computation_id = 1 AND m.profile_id IN (SELECT profile_id FROM engage_scope)
                """, db).isEmpty)
            // Other equalities beside profile_id's are fine: the rows meet on one node.
            #expect(try await crossings("""
                SELECT * FROM engage.ledger l
                WHERE EXISTS (SELECT 1 FROM engage.outbox o WHERE o.profile_id = l.profile_id AND o.vero_id = l.vero_id)
                """, db).isEmpty)
            // The deliberately broken join: a profile's user id against a member's profile id.
            #expect(try await crossings("""
                SELECT * FROM engage.memberships m JOIN engage.profiles p ON p.user_id = m.profile_id
                """, db) == ["engage.memberships.profile_id = engage.profiles.user_id"])
            // An equality of expressions, even over profile_id, is not a join on the distribution column.
            #expect(try await crossings("""
                SELECT * FROM engage.memberships m JOIN engage.profiles p ON p.profile_id || '' = m.profile_id || ''
                """, db) == ["engage.memberships.(expression over profile_id) = engage.profiles.(expression over profile_id)"])
            #expect(try await crossings("""
                SELECT * FROM engage.ledger l
                WHERE NOT EXISTS (SELECT 1 FROM engage.outbox o WHERE o.vero_id = l.vero_id)
                """, db) == ["engage.ledger.vero_id = engage.outbox.vero_id"])
            // Through a subquery and a materialized CTE, to the relation beneath.
            #expect(try await crossings("""
                WITH cur AS MATERIALIZED (SELECT i.profile_id, 'u' || i.vero_id AS vero_id FROM engage_ids i)
                SELECT * FROM (SELECT * FROM cur WHERE vero_id IS NOT NULL) o
                LEFT JOIN engage.ledger l ON l.vero_id = o.vero_id
                """, db) == ["engage.ledger.vero_id = pg_temp.engage_ids.vero_id"])
            #expect(try await crossings("""
                UPDATE engage.outbox o SET status = 'superseded'
                FROM (SELECT o2.id FROM engage.outbox o2 WHERE o2.status = 'pending') stale WHERE o.id = stale.id
                """, db) == ["engage.outbox.id = engage.outbox.id"])
        }
    }

    @Test("the joins docs/scaling.md lists are read from its table")
    func documentedList() throws {
        let listed = ColocationCheck.documented(in: try ColocationCheck.scalingDocument())
        #expect(!listed.isEmpty)
        #expect(listed.allSatisfy { $0.left.contains(".") && $0.right.contains(".") })
    }
}
