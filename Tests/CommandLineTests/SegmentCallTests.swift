import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

/// Pins the Segment call of docs/architecture.md#how-syncs-behave exactly, as a run writes it to
/// the outbox: every field,
/// its type and its value, for an identify, a track (`send_as: "track"`) and a trait.
@Suite("The Segment call of docs/architecture.md#how-syncs-behave")
struct SegmentCallTests {
    @Test("identify, track and trait calls carry exactly the fields docs/architecture.md#how-syncs-behave names")
    func exactCalls() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                VALUES ('p1', 'u1', 'ann@example.com', '{"plan": "pro"}'), ('p2', 'u2', NULL, '{"plan": "pro"}');
                INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
                VALUES ('e1', 'p1', 'Order Completed', '{"total": 12.5}', now());
                """)
            try await f.define(#"{"name": "VIP", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            try await f.define(#"{"name": "VIP Track", "key": "vip_track", "type": "audience", "send_as": "track", "condition": {"trait": "plan", "equals": "pro"}}"#)
            try await f.define(#"{"name": "Spend", "type": "trait", "value": {"aggregate": "sum", "event": "Order Completed", "property": "total"}}"#)
            let run = try await f.cli(["run", "--no-deliver"])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            // A first sync leaves its members to a backlog; delivery enqueues them as it goes.
            #expect(try await BacklogStore(f.db).expand(for: f.destination, limit: 100).covered == 5)
            let spaceID = try #require(try await f.db.query("SELECT value FROM engage.settings WHERE key = 'space_id'").first?["value"])
            #expect(spaceID.hasPrefix("spa_") && spaceID.count == 36)
            let rows = try await f.db.query("""
                SELECT o.id, c.key, c.id::text AS computation_id, o.profile_id, o.run_id,
                       'engage-' || md5(concat_ws('|', d.name, c.key, o.profile_id, o.value::text, o.run_id::text,
                                                  o.call, o.vero_id)) AS message_id
                FROM engage.outbox o JOIN engage.computations c ON c.id = o.computation_id
                JOIN engage.destinations d ON d.id = o.destination_id
                ORDER BY c.key, o.profile_id
                """)
            #expect(rows.count == 5)
            // The calls as delivery builds them when it claims the rows.
            var built: [String: JSONValue] = [:]
            for claimed in try await OutboxStore(f.db).claim(destinationID: f.destination.id, limit: 100, leaseSeconds: 60, worker: "test") {
                guard case .built(let call) = claimed.call else { Issue.record("row \(claimed.id) stores its call"); continue }
                built[String(claimed.id)] = call.json
            }
            var timestamps: Set<String> = []
            for row in rows {
                let key = try #require(row["key"]), profile = try #require(row["profile_id"])
                let id = try #require(row["id"])
                let message = try #require(built[id])
                let timestamp = try #require(message["timestamp"]?.stringValue)
                timestamps.insert(timestamp)
                #expect(timestamp.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression) != nil)
                let user: JSONValue = profile == "p1" ? "u1" : "u2"
                let email: JSONValue? = profile == "p1" ? "ann@example.com" : nil
                let personas: JSONValue = .object([
                    "computation_class": key == "spend" ? "trait" : "audience",
                    "computation_id": .string(try #require(row["computation_id"])), "computation_key": .string(key),
                    "namespace": .string(spaceID), "space_id": .string(spaceID),
                ])
                var expected: [String: JSONValue] = [
                    "messageId": .string(try #require(row["message_id"])), "timestamp": .string(timestamp), "userId": user,
                    "integrations": ["All": false, "Vero": true],
                ]
                switch key {
                case "vip", "spend":
                    var traits: [String: JSONValue] = [key: key == "vip" ? .bool(true) : .double(12.5)]
                    traits["email"] = email
                    expected["type"] = "identify"
                    expected["traits"] = .object(traits)
                    expected["context"] = ["personas": personas]
                default:
                    expected["type"] = "track"
                    expected["event"] = "Audience Entered"
                    expected["properties"] = ["audience_key": "vip_track", "vip_track": true]
                    var context: [String: JSONValue] = ["personas": personas]
                    if let email { context["traits"] = ["email": email] }
                    expected["context"] = .object(context)
                }
                #expect(message == .object(expected), "\(key) \(profile): \(message.jsonString)")
            }
            #expect(timestamps.count == 1, "one timestamp for the run: \(timestamps)")
            #expect(Set(rows.compactMap { $0["message_id"] }).count == rows.count)
        }
    }
}
