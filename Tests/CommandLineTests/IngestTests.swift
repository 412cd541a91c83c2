import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("ingest: Segment NDJSON into profiles and events")
struct IngestTests {
    func file(_ lines: [String]) throws -> String {
        let path = try temporaryFile(lines.joined(separator: "\n"), suffix: ".ndjson")
        return path
    }

    func scalar(_ db: PostgresConnection, _ sql: PostgresQuery) async throws -> String? {
        try await db.query(sql).first?[0]
    }

    @Test("every message type, trait merging (later wins), page/screen names, group, alias merge, idempotency")
    func messageTypes() async throws {
        try await TestDatabase.with { db, url in
            let path = try file([
                #"{"type": "identify", "messageId": "i1", "userId": "ann", "traits": {"email": "ann@old.example", "plan": "free", "city": "Oslo"}}"#,
                #"{"type": "identify", "messageId": "i2", "userId": "ann", "traits": {"email": "ann@example.com", "plan": "pro"}}"#,
                #"{"type": "track", "messageId": "t1", "userId": "ann", "event": "Order Completed", "properties": {"total": 42}, "timestamp": "2025-05-01T10:00:00Z"}"#,
                #"{"type": "page", "messageId": "p1", "userId": "ann", "name": "Pricing", "properties": {"url": "https://x/pricing"}}"#,
                #"{"type": "screen", "messageId": "s1", "anonymousId": "anon-1", "name": "Home"}"#,
                #"{"type": "track", "messageId": "t2", "anonymousId": "anon-1", "event": "Product Viewed"}"#,
                #"{"type": "identify", "messageId": "i3", "anonymousId": "anon-1", "traits": {"referrer": "ads", "plan": "trial"}}"#,
                #"{"type": "group", "messageId": "g1", "userId": "ann", "groupId": "acme", "traits": {"name": "Acme"}}"#,
                #"{"type": "alias", "messageId": "a1", "previousId": "anon-1", "userId": "ann"}"#,
            ])
            let first = try await CLI.run(["ingest", path, "--database-url", url])
            #expect(first.status == 0, "\(first.stderr)")
            #expect(try await scalar(db, "SELECT count(*) FROM engage.profiles") == "1")
            let ann = try #require(try await db.query("SELECT user_id, email, anonymous_id, traits::text AS traits FROM engage.profiles WHERE profile_id = 'ann'").first)
            #expect(try ann.decode(String.self, "email") == "ann@example.com")
            #expect(try ann.decode(String.self, "anonymous_id") == "anon-1")
            let traits = try JSONValue.parse(try ann.decode(String.self, "traits"))
            #expect(traits["plan"] == "pro")     // the identified profile's value wins over the anonymous one
            #expect(traits["city"] == "Oslo")
            #expect(traits["referrer"] == "ads") // merged from the anonymous profile
            #expect(traits["group_id"] == "acme")
            #expect(traits["group"]?["name"] == "Acme")
            let events = try await db.query("SELECT message_id, profile_id, event, properties::text AS p FROM engage.events ORDER BY message_id")
            #expect(events.count == 4)
            #expect(events.allSatisfy { $0["profile_id"] == "ann" }) // the anonymous events moved
            #expect(events.first { $0["message_id"] == "p1" }?["event"] == "Page Viewed")
            #expect(events.first { $0["message_id"] == "p1" }?["p"]?.contains(#""page_name": "Pricing""#) == true)
            #expect(events.first { $0["message_id"] == "s1" }?["event"] == "Screen Viewed")
            #expect(try await scalar(db, "SELECT occurred_at FROM engage.events WHERE message_id = 't1'") == "2025-05-01 10:00:00+00")

            let fingerprint: PostgresQuery = "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (SELECT (p.profile_id, p.user_id, p.email, p.traits)::text AS t FROM engage.profiles p UNION ALL SELECT (e.message_id, e.profile_id, e.event, e.properties, e.occurred_at)::text FROM engage.events e) x"
            let before = try await scalar(db, fingerprint)
            let again = try await CLI.run(["ingest", path, "--database-url", url])
            #expect(again.status == 0)
            #expect(again.stdout.contains("0 events (4 already present)"))
            #expect(try await scalar(db, fingerprint) == before)
        }
    }

    @Test("malformed lines are reported by number, the rest load, exit 3")
    func malformed() async throws {
        try await TestDatabase.with { db, url in
            var lines = [
                #"{"type": "track", "messageId": "ok1", "userId": "u", "event": "E"}"#,
                "{not json",
                #"{"userId": "u", "event": "E"}"#,
                #"{"type": "track", "userId": "u"}"#,
                #"{"type": "launch", "userId": "u"}"#,
                #"{"type": "track", "event": "E"}"#,
                #"{"type": "track", "messageId": "nul", "userId": "u", "event": "E", "properties": {"x": "a\u0000b"}}"#,
                #"{"type": "track", "messageId": "big", "userId": "u", "event": "E", "properties": {"n": 1e400}}"#,
                #"{"type": "alias", "userId": "u"}"#,
                #"{"type": "track", "messageId": "ok2", "userId": "u", "event": "E"}"#,
            ]
            lines.append(String(repeating: "x", count: 2 << 20))
            var data = Data(lines.joined(separator: "\n").utf8)
            data.append(contentsOf: [10, 0xFF, 0xFE, 10])
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID()).ndjson").path
            try data.write(to: URL(fileURLWithPath: path))
            let run = try await CLI.run(["ingest", path, "--database-url", url])
            #expect(run.status == 3, "\(run.stdout) \(run.stderr)")
            for expected in ["line 2: invalid JSON", "line 3: missing \"type\"", "line 4: a track call needs", "line 5: unknown type",
                             "line 6: needs userId or anonymousId", "line 7: contains a NUL", "line 9: an alias needs",
                             "line 11: longer than 1 MiB", "line 12: not valid UTF-8"] {
                #expect(run.stderr.contains(expected), "missing: \(expected)\n\(run.stderr)")
            }
            #expect(run.stdout.contains("lines rejected"))
            let ids = try await db.query("SELECT message_id FROM engage.events ORDER BY 1").map { $0["message_id"] ?? "" }
            #expect(ids.contains("ok1") && ids.contains("ok2"))
        }
    }

    @Test("identifiers over 1,024 bytes: each line is refused with its number, every good line loads, whichever lane")
    func identifierBounds() async throws {
        try await TestDatabase.with { db, url in
            let long = String(repeating: "é", count: 600) // 1,200 bytes: under PostgreSQL's index limit, over ours
            let huge = String(repeating: "x", count: 9_600) // over PostgreSQL's index limit
            // Good lines for 20 users (both lanes), then one bad line per identifier.
            var lines = (1...20).flatMap { i in
                [#"{"type": "identify", "messageId": "id\#(i)", "userId": "u\#(i)", "traits": {"email": "u\#(i)@example.com"}}"#,
                 #"{"type": "track", "messageId": "t\#(i)", "userId": "u\#(i)", "event": "E"}"#]
            }
            let bad = [
                ("userId", #"{"type": "track", "messageId": "b1", "userId": "\#(huge)", "event": "E"}"#),
                ("anonymousId", #"{"type": "track", "messageId": "b2", "anonymousId": "\#(long)", "event": "E"}"#),
                ("messageId", #"{"type": "track", "messageId": "\#(huge)", "userId": "u1", "event": "E"}"#),
                ("event", #"{"type": "track", "messageId": "b4", "userId": "u2", "event": "\#(huge)"}"#),
                ("traits.email", #"{"type": "identify", "messageId": "b5", "userId": "u3", "traits": {"email": "\#(huge)"}}"#),
                ("name", #"{"type": "page", "messageId": "b6", "userId": "u4", "name": "\#(long)"}"#),
            ]
            lines += bad.map(\.1)
            lines.append(#"{"type": "track", "messageId": "last", "userId": "u5", "event": "E"}"#)
            let path = try temporaryFile(lines.joined(separator: "\n"), suffix: ".ndjson")
            let run = try await CLI.run(["ingest", path, "--database-url", url])
            #expect(run.status == 3, "\(run.stdout) \(run.stderr)")
            for (i, (field, _)) in bad.enumerated() {
                let expected = "line \(41 + i): \"\(field)\" is"
                #expect(run.stderr.contains(expected) && run.stderr.contains("identifiers are limited to 1024 bytes"),
                        "missing: \(expected)\n\(run.stderr.prefix(2000))")
            }
            #expect(try await db.query("SELECT count(*)::int AS c FROM engage.events").first?.decode(Int.self, "c") == 21)
            #expect(try await db.query("SELECT count(*)::int AS c FROM engage.profiles WHERE email LIKE 'u%@example.com'").first?.decode(Int.self, "c") == 20)
            #expect(try await db.query("SELECT count(*)::int AS c FROM engage.profiles WHERE octet_length(profile_id) > 1024 OR octet_length(email) > 1024").first?.decode(Int.self, "c") == 0)
        }
    }

    @Test("payloads are stored as sent (escapes, Unicode, nesting); an alias across lanes moves events before and after it")
    func payloadsAndLanes() async throws {
        try await TestDatabase.with { db, url in
            // Pick an anonymous id whose profile loads on the other lane than the user's.
            let lane = { (key: String) in StableHash.fnv1a(key) % 2 }
            let anon = try #require((0..<100).map { "anon-\($0)" }.first { lane($0) != lane("bea") })
            let properties = #"{"quote": "a\"b", "tab": "x\ty", "backslash": "c:\\dir", "not_nul": "\\u0000", "u": "\u00e9 😀", "list": [1, 2.5, {"deep": [true, null]}]}"#
            var lines = [#"{"type": "track", "messageId": "e0", "userId": "bea", "event": "Escapes", "properties": \#(properties)}"#]
            lines += (1...30).map { #"{"type": "track", "messageId": "before\#($0)", "anonymousId": "\#(anon)", "event": "Product Viewed"}"# }
            lines.append(#"{"type": "alias", "previousId": "\#(anon)", "userId": "bea"}"#)
            lines += (1...30).map { #"{"type": "track", "messageId": "after\#($0)", "userId": "bea", "event": "Product Viewed"}"# }
            let run = try await CLI.run(["ingest", try file(lines), "--database-url", url])
            #expect(run.status == 0, "\(run.stderr)")
            let stored = try #require(try await scalar(db, "SELECT properties::text FROM engage.events WHERE message_id = 'e0'"))
            #expect(try JSONValue.parse(stored) == JSONValue.parse(properties))
            #expect(try await scalar(db, "SELECT count(*) FROM engage.events WHERE profile_id = 'bea'") == "61")
            #expect(try await scalar(db, "SELECT count(*) FROM engage.profiles") == "1")
        }
    }

    @Test("a 1M-event file loads completely; the throughput is printed")
    func millionEvents() async throws {
        try await TestDatabase.with { db, url in
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("million-\(UUID()).ndjson").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            let profiles = 100_000, events = 1_000_000
            var chunk = ""
            for p in 0..<profiles {
                chunk += #"{"type":"identify","messageId":"id\#(p)","userId":"m\#(p)","traits":{"email":"m\#(p)@example.com","plan":"p\#(p % 3)"}}"# + "\n"
                if chunk.utf8.count > 1 << 20 { handle.write(Data(chunk.utf8)); chunk = "" }
            }
            for e in 0..<events {
                chunk += #"{"type":"track","messageId":"ev\#(e)","userId":"m\#(e % profiles)","event":"Order Completed","properties":{"total":\#(e % 997),"sku":"s\#(e % 50)"},"timestamp":"2025-0\#(1 + e % 9)-1\#(e % 10)T10:00:00.000Z"}"# + "\n"
                if chunk.utf8.count > 1 << 20 { handle.write(Data(chunk.utf8)); chunk = "" }
            }
            handle.write(Data(chunk.utf8))
            try handle.close()
            let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0

            let run = try await CLI.run(["ingest", path, "--database-url", url])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("\(events) events (0 already present), \(profiles) profiles created"), "\(run.stdout)")
            #expect(try await scalar(db, "SELECT count(*) FROM engage.events") == "\(events)")
            #expect(try await scalar(db, "SELECT count(*) FROM engage.profiles WHERE email = profile_id || '@example.com'") == "\(profiles)")
            #expect(try await scalar(db, "SELECT sum((properties->>'total')::int) FROM engage.events") == "\((0..<events).reduce(0) { $0 + $1 % 997 })")
            print("ingest of \(events + profiles) lines (\(size / 1_000_000) MB, debug build): \(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
