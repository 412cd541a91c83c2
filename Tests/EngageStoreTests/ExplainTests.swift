import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

/// `engage.explain` and the ``Explainer``: each kind of evidence, profiles deleted or without a
/// user id, and bad input. (Every semantics test also checks that it decides as the evaluation
/// does: ``Fixture/explainAgrees(_:_:)``.)
@Suite("explain: why a profile holds a definition, with the evidence")
struct ExplainTests {
    func explain(_ db: PostgresConnection, _ key: String, _ profile: ProfileReference, at: Date = Fixture.now) async throws -> JSONValue {
        try await Explainer(db).explain(key: key, profile: profile, at: at)
    }

    func instant(_ value: JSONValue?) -> Date? { value?.stringValue.flatMap(Timestamp.parse)?.date }

    @Test("an event condition: the window's bounds, the count against its rule, the first and last matching instants, the filter")
    func eventEvidence() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await f.profile("p1")
            try await f.event("p1", "Order Completed", at: Fixture.ago(days: 61), properties: #"{"total": 500}"#) // before the window
            try await f.event("p1", "Order Completed", at: Fixture.ago(days: 50), properties: #"{"total": 200}"#)
            try await f.event("p1", "Order Completed", at: Fixture.ago(days: 40), properties: #"{"total": 5}"#) // filtered out
            try await f.event("p1", "Order Completed", at: Fixture.ago(days: 31), properties: #"{"total": 150}"#)
            try await f.event("p1", "Order Completed", at: Fixture.ago(days: 30), properties: #"{"total": 150}"#) // the newer bound: out
            for (rule, verdict) in [(#"{"at_least": 2}"#, true), (#"{"at_least": 3}"#, false), (#"{"at_most": 1}"#, false),
                                    (#"{"exactly": 2}"#, true)] {
                let key = "a\(UUID().uuidString.prefix(8).lowercased())"
                try await f.evaluate("""
                    {"name": "\(key)", "key": "\(key)", "type": "audience", "condition": {"event": "Order Completed",
                     "between": ["60d", "30d"], "where": [{"property": "total", "gte": 100}], "count": \(rule)}}
                    """)
                let e = try await explain(db, key, .profileID("p1"))
                let node = try #require(e["explanation"])
                #expect(node["kind"] == "event" && node["count"] == 2 && node["verdict"] == .bool(verdict), "\(rule): \(node.jsonString)")
                #expect(e["value"] == (verdict ? true : .null))
                #expect(instant(node["from"]) == Fixture.ago(days: 60))
                #expect(instant(node["to"]) == Fixture.ago(days: 30))
                #expect(instant(node["first"]) == Fixture.ago(days: 50))
                #expect(instant(node["last"]) == Fixture.ago(days: 31))
                #expect(node["where"] == [["property": "total", "gte": 100]])
                #expect(node["rule"] == (try JSONValue.parse(rule)))
            }
        }
    }

    @Test("a trait condition says the value found or that it is missing; not, all and any carry their parts' verdicts")
    func traitsAndLogic() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await f.profile("pro", traits: #"{"plan": "pro", "address": {"city": "Paris"}}"#)
            try await f.profile("bare")
            try await f.evaluate("""
                {"name": "Not Paris Pro", "key": "not_paris_pro", "type": "audience", "condition": {"all": [
                  {"trait": "plan", "equals": "pro"}, {"not": {"trait": "address.city", "equals": "Paris"}}]}}
                """)
            let pro = try await explain(db, "not_paris_pro", .profileID("pro"))
            let parts = try #require(pro["explanation"]?["items"]?.arrayValue)
            #expect(pro["explanation"]?["kind"] == "all" && pro["explanation"]?["verdict"] == false && pro["value"] == .null)
            #expect(parts[0]["found"] == "pro" && parts[0]["verdict"] == true && parts[0]["operator"] == ["equals": "pro"])
            #expect(parts[1]["kind"] == "not" && parts[1]["verdict"] == false)
            #expect(parts[1]["item"]?["found"] == "Paris" && parts[1]["item"]?["verdict"] == true)
            let bare = try await explain(db, "not_paris_pro", .profileID("bare"))
            #expect(bare["explanation"]?["items"]?.arrayValue?.first?["found"] == .null, "missing")
            #expect(bare["explanation"]?["items"]?.arrayValue?.first?["verdict"] == false)
        }
    }

    @Test("a referenced audience is explained inside, nested; a SQL audience by what its snapshot held")
    func references() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await f.profile("p1", traits: #"{"plan": "pro"}"#)
            try await f.event("p1", "Order Completed", at: Fixture.ago(days: 3))
            try await f.evaluate(#"{"name": "Buyers", "key": "buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "30d"}}"#)
            try await f.evaluate(#"{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            try await f.evaluate(#"{"name": "Pro Buyers", "key": "pro_buyers", "type": "audience", "condition": {"all": [{"audience": "buyers"}, {"audience": "pro"}]}}"#)
            let e = try await explain(db, "pro_buyers", .userID("p1"))
            let buyers = try #require(e["explanation"]?["items"]?.arrayValue?.first)
            #expect(buyers["kind"] == "audience" && buyers["audience"] == "buyers" && buyers["verdict"] == true)
            #expect(buyers["condition"]?["kind"] == "event" && buyers["condition"]?["count"] == 1)
            #expect(e["value"] == true)
            // A SQL audience: not run again, its snapshot decides.
            try await db.execute("""
                INSERT INTO engage.computations (key, name, type, definition)
                VALUES ('vips', 'VIPs', 'audience', '{"name": "VIPs", "key": "vips", "type": "audience", "sql": "SELECT 1"}')
                """)
            try await db.query("""
                INSERT INTO engage.memberships (computation_id, profile_id, value, since)
                SELECT id, 'p1', 'true', \(Fixture.ago(days: 2)) FROM engage.computations WHERE key = 'vips'
                """)
            try await f.evaluate(#"{"name": "Pro VIPs", "key": "pro_vips", "type": "audience", "condition": {"all": [{"audience": "vips"}, {"audience": "pro"}]}}"#)
            let vip = try await explain(db, "pro_vips", .profileID("p1"))
            #expect(vip["explanation"]?["items"]?.arrayValue?.first?["source"] == "sql snapshot" && vip["explanation"]?["items"]?.arrayValue?.first?["verdict"] == true)
            // Before the snapshot's value took effect it was not held.
            let before = try await explain(db, "pro_vips", .profileID("p1"), at: Fixture.ago(days: 3))
            #expect(before["explanation"]?["items"]?.arrayValue?.first?["verdict"] == false && before["value"] == .null)
        }
    }

    @Test("a computed trait: its value, the first ten events that made it and how many more")
    func traitValue() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await f.profile("p1")
            for day in 1...14 { try await f.event("p1", "Order Completed", at: Fixture.ago(days: Double(day)), properties: #"{"total": \#(day)}"#) }
            try await f.evaluate(#"{"name": "Revenue", "key": "revenue", "type": "trait", "value": {"aggregate": "sum", "event": "Order Completed", "property": "total", "within": "30d"}}"#)
            let e = try await explain(db, "revenue", .profileID("p1"))
            let node = try #require(e["explanation"])
            #expect(e["value"] == 105 && node["value"] == 105 && node["count"] == 14 && node["more"] == 4)
            let events = try #require(node["events"]?.arrayValue)
            #expect(events.count == 10)
            #expect(events.first?["value"] == 14 && events.last?["value"] == 5, "oldest first")
        }
    }

    @Test("a profile without a user id or email is not eligible; a deleted one is explained from what is kept; bad input is refused")
    func profilesAndBadInput() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await f.profile("anon", userID: .some(nil))
            try await f.profile("gone", traits: #"{"plan": "pro"}"#)
            try await f.profile("shared1", userID: .some(nil), email: "s@example.com")
            try await f.profile("shared2", email: "s@example.com")
            try await f.evaluate(#"{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "exists": false}}"#)
            let anon = try await explain(db, "pro", .profileID("anon"))
            #expect(anon["eligible"] == false && anon["value"] == .null && anon["explanation"]?["verdict"] == true)
            // Deleted after Vero was told: the ledger still names it.
            try await db.execute("""
                INSERT INTO engage.destinations (name, base_url, token_env) VALUES ('vero', 'http://127.0.0.1:1', 'T');
                WITH sent AS (
                    INSERT INTO engage.outbox (destination_id, computation_id, profile_id, op, value, message, status, vero_id)
                    SELECT d.id, c.id, 'gone', 'enter', 'true', '{}', 'delivered', 'gone'
                    FROM engage.destinations d, engage.computations c WHERE c.key = 'pro'
                    RETURNING id, destination_id, computation_id)
                INSERT INTO engage.ledger (destination_id, computation_id, profile_id, value, confirmed_at, outbox_id, vero_id)
                SELECT destination_id, computation_id, 'gone', 'true', now(), id, 'gone' FROM sent;
                DELETE FROM engage.profiles WHERE profile_id = 'gone';
                """)
            let gone = try await explain(db, "pro", .userID("gone"))
            #expect(gone["deleted"] == true && gone["value"] == .null && gone["profile_id"] == "gone")
            #expect(gone["destinations"]?.arrayValue?.first?["ledger"]?.arrayValue?.first?["vero_id"] == "gone")
            #expect(try await Explainer(db).profileID(.email("s@example.com")) == "shared2", "the one with a user id")
            await #expect(throws: UnknownKey.self) { try await explain(db, "nope", .profileID("anon")) }
            await #expect(throws: UnknownProfile.self) { try await explain(db, "pro", .profileID("nobody")) }
            await #expect(throws: UnknownProfile.self) { try await explain(db, "pro", .userID("nobody")) }
            await #expect(throws: UnknownProfile.self) { try await explain(db, "pro", .email("nobody@example.com")) }
        }
    }
}
