import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("Audience semantics on a real PostgreSQL")
struct AudienceSemanticsTests {
    @Test("within: the window's edge is inclusive, one second older is out")
    func withinEdges() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            for p in ["edge", "outside", "inside", "other_event"] { try await f.profile(p) }
            try await f.event("edge", "Order Completed", at: Fixture.ago(days: 30))
            try await f.event("outside", "Order Completed", at: Fixture.ago(days: 30, seconds: 1))
            try await f.event("inside", "Order Completed", at: Fixture.ago(days: 1))
            try await f.event("other_event", "Order Refunded", at: Fixture.ago(days: 1))
            #expect(try await f.members(#"{"event": "Order Completed", "within": "30d"}"#) == ["edge", "inside"])
            #expect(try await f.members(#"{"event": "Order Completed"}"#) == ["edge", "outside", "inside"])
        }
    }

    @Test("between [60d, 30d]: older bound inclusive, newer bound exclusive")
    func betweenEdges() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            let at: [String: Date] = [
                "at60": Fixture.ago(days: 60), "past60": Fixture.ago(days: 60, seconds: 1),
                "at30": Fixture.ago(days: 30), "just_before30": Fixture.ago(days: 30, seconds: 1), "recent": Fixture.ago(days: 2),
            ]
            for (p, date) in at {
                try await f.profile(p)
                try await f.event(p, "Signed Up", at: date)
            }
            #expect(try await f.members(#"{"event": "Signed Up", "between": ["60d", "30d"]}"#) == ["at60", "just_before30"])
        }
    }

    @Test("count: at_least, at_most, exactly; at_most 0 and exactly 0 include profiles with no events")
    func counts() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            for (p, n) in [("zero", 0), ("one", 1), ("two", 2), ("three", 3)] {
                try await f.profile(p)
                for _ in 0..<n { try await f.event(p, "Email Opened", at: Fixture.ago(days: 1)) }
            }
            try await f.event("zero", "Email Opened", at: Fixture.ago(days: 100)) // outside the window
            let e = #""event": "Email Opened", "within": "30d""#
            #expect(try await f.members(#"{\#(e), "count": {"at_least": 2}}"#) == ["two", "three"])
            #expect(try await f.members(#"{\#(e), "count": {"at_most": 1}}"#) == ["zero", "one"])
            #expect(try await f.members(#"{\#(e), "count": {"at_most": 0}}"#) == ["zero"])
            #expect(try await f.members(#"{\#(e), "count": {"exactly": 0}}"#) == ["zero"])
            #expect(try await f.members(#"{\#(e), "count": {"exactly": 2}}"#) == ["two"])
            #expect(try await f.members(#"{\#(e), "count": {"at_least": 0}}"#) == ["zero", "one", "two", "three"])
        }
    }

    @Test("not of an event condition; all and any")
    func booleanLogic() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            for p in ["buyer", "viewer", "both", "neither"] { try await f.profile(p) }
            for p in ["buyer", "both"] { try await f.event(p, "Order Completed", at: Fixture.ago(days: 1)) }
            for p in ["viewer", "both"] { try await f.event(p, "Product Viewed", at: Fixture.ago(days: 1)) }
            let buy = #"{"event": "Order Completed"}"#, view = #"{"event": "Product Viewed"}"#
            #expect(try await f.members(#"{"not": \#(buy)}"#) == ["viewer", "neither"])
            #expect(try await f.members(#"{"all": [\#(view), {"not": \#(buy)}]}"#) == ["viewer"])
            #expect(try await f.members(#"{"any": [\#(view), \#(buy)]}"#) == ["buyer", "viewer", "both"])
            #expect(try await f.members(#"{"not": {"any": [\#(view), \#(buy)]}}"#) == ["neither"])
        }
    }

    @Test("audience of audience, and not-member-of")
    func audienceReferences() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            for p in ["vip_buyer", "buyer", "vip_only"] { try await f.profile(p) }
            try await db.query("UPDATE engage.profiles SET traits = '{\"tier\": \"vip\"}' WHERE profile_id IN ('vip_buyer', 'vip_only')")
            for p in ["vip_buyer", "buyer"] { try await f.event(p, "Order Completed", at: Fixture.ago(days: 3)) }
            try await f.evaluate(#"{"name": "Buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "7d"}}"#)
            #expect(try await f.members(#"{"all": [{"audience": "buyers"}, {"trait": "tier", "equals": "vip"}]}"#) == ["vip_buyer"])
            #expect(try await f.members(#"{"not": {"audience": "buyers"}}"#) == ["vip_only"])
        }
    }

    @Test("anonymous-only profiles are left out unless include_anonymous")
    func anonymous() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await f.profile("known")
            try await f.profile("email_only", userID: .some(nil), email: "e@example.com")
            try await f.profile("anon", userID: .some(nil))
            for p in ["known", "email_only", "anon"] { try await f.event(p, "Page Viewed", at: Fixture.ago(days: 1)) }
            #expect(try await f.members(#"{"event": "Page Viewed"}"#) == ["known", "email_only"])
            #expect(try await f.members(#"{"event": "Page Viewed"}"#, includeAnonymous: true) == ["known", "email_only", "anon"])
        }
    }

    @Test("trait operators: equality, not_equals never matches missing values, numbers, lists")
    func traitOperators() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            let traits = [
                "pro": #"{"plan": "pro", "seats": 5, "score": "high"}"#,
                "pro_float": #"{"plan": "Pro", "seats": 5.0}"#,
                "free": #"{"plan": "free", "seats": 1}"#,
                "null_plan": #"{"plan": null, "seats": "many"}"#,
                "missing": #"{}"#,
            ]
            for (p, t) in traits { try await f.profile(p, traits: t) }
            func m(_ c: String) async throws -> Set<String> { try await f.members(c) }
            #expect(try await m(#"{"trait": "plan", "equals": "pro"}"#) == ["pro"])  // case-sensitive
            #expect(try await m(#"{"trait": "seats", "equals": 5}"#) == ["pro", "pro_float"])
            #expect(try await m(#"{"trait": "plan", "not_equals": "pro"}"#) == ["pro_float", "free"])
            #expect(try await m(#"{"not": {"trait": "plan", "equals": "pro"}}"#) == ["pro_float", "free", "null_plan", "missing"])
            #expect(try await m(#"{"trait": "seats", "gt": 1}"#) == ["pro", "pro_float"])
            #expect(try await m(#"{"trait": "seats", "gte": 1}"#) == ["pro", "pro_float", "free"])
            #expect(try await m(#"{"trait": "seats", "lt": 5}"#) == ["free"])
            #expect(try await m(#"{"trait": "seats", "lte": 5}"#) == ["pro", "pro_float", "free"])
            #expect(try await m(#"{"trait": "score", "gt": 0}"#) == []) // a non-numeric value does not match
            #expect(try await m(#"{"trait": "plan", "one_of": ["pro", "free"]}"#) == ["pro", "free"])
            #expect(try await m(#"{"trait": "plan", "none_of": ["pro", "free"]}"#) == ["pro_float"])
            #expect(try await m(#"{"trait": "plan", "exists": true}"#) == ["pro", "pro_float", "free"])
            #expect(try await m(#"{"trait": "plan", "exists": false}"#) == ["null_plan", "missing"])
        }
    }

    @Test("string operators are case-sensitive and need a string")
    func stringOperators() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            let traits = ["a": #"{"url": "https://shop.example.com/Checkout"}"#, "b": #"{"url": "http://blog.example.org/"}"#,
                          "n": #"{"url": 42}"#, "x": #"{}"#]
            for (p, t) in traits { try await f.profile(p, traits: t) }
            func m(_ c: String) async throws -> Set<String> { try await f.members(c) }
            #expect(try await m(#"{"trait": "url", "contains": "Checkout"}"#) == ["a"])
            #expect(try await m(#"{"trait": "url", "contains": "checkout"}"#) == [])
            #expect(try await m(#"{"trait": "url", "not_contains": "shop"}"#) == ["b"])
            #expect(try await m(#"{"trait": "url", "starts_with": "https://"}"#) == ["a"])
            #expect(try await m(#"{"trait": "url", "ends_with": ".org/"}"#) == ["b"])
            #expect(try await m(#"{"trait": "url", "ends_with": ""}"#) == ["a", "b"])
        }
    }

    @Test("before, after and within_last on timestamp values; junk is no match")
    func timeOperators() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            let traits = ["old": #"{"signup": "2020-01-01T00:00:00Z"}"#, "recent": #"{"signup": "2025-05-25T12:00:00+02:00"}"#,
                          "junk": #"{"signup": "now"}"#, "bad_date": #"{"signup": "2025-13-45"}"#, "num": #"{"signup": 5}"#]
            for (p, t) in traits { try await f.profile(p, traits: t) }
            func m(_ c: String) async throws -> Set<String> { try await f.members(c) }
            #expect(try await m(#"{"trait": "signup", "before": "2025-01-01T00:00:00Z"}"#) == ["old"])
            #expect(try await m(#"{"trait": "signup", "after": "2025-01-01"}"#) == ["recent"])
            #expect(try await m(#"{"trait": "signup", "within_last": "30d"}"#) == ["recent"])
        }
    }

    @Test("event filters: nested paths, an escaped dot, all filters must hold")
    func eventFilters() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            for p in ["paris_big", "paris_small", "lyon", "dotted"] { try await f.profile(p) }
            try await f.event("paris_big", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"total": 250, "address": {"city": "Paris"}}"#)
            try await f.event("paris_small", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"total": 20, "address": {"city": "Paris"}}"#)
            try await f.event("lyon", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"total": 900, "address": {"city": "Lyon"}}"#)
            try await f.event("dotted", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"utm.source": "newsletter", "utm": {"source": "ads"}}"#)
            #expect(try await f.members(#"{"event": "Order Completed", "where": [{"property": "address.city", "equals": "Paris"}, {"property": "total", "gte": 100}]}"#) == ["paris_big"])
            #expect(try await f.members(#"{"event": "Order Completed", "where": [{"property": "utm\\.source", "equals": "newsletter"}]}"#) == ["dotted"])
            #expect(try await f.members(#"{"event": "Order Completed", "where": [{"property": "utm.source", "equals": "ads"}]}"#) == ["dotted"])
        }
    }

    @Test("hostile strings in event names, paths and values are matched literally")
    func injection() async throws {
        let hostile = [#"x'); DROP TABLE engage.events; --"#, #"a"b"#, "semi;colon", "-- comment", "$1", #"back\slash"#, "ünï漢🎉", "{a,b}"]
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            for (i, s) in hostile.enumerated() {
                let p = "p\(i)"
                let props = JSONValue.object([s: .string(s)]).jsonString
                try await f.profile(p, traits: props)
                try await f.event(p, s, at: Fixture.ago(days: 1), properties: props)
            }
            try await f.profile("bystander", traits: #"{"x": "y"}"#)
            for (i, s) in hostile.enumerated() {
                let name = JSONValue.string(s).jsonString
                let path = JSONValue.string(s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ".", with: "\\.")).jsonString
                #expect(try await f.members(#"{"event": \#(name)}"#) == ["p\(i)"], "event \(s)")
                #expect(try await f.members(#"{"event": \#(name), "where": [{"property": \#(path), "equals": \#(name)}]}"#) == ["p\(i)"], "property \(s)")
                #expect(try await f.members(#"{"trait": \#(path), "equals": \#(name)}"#) == ["p\(i)"], "trait \(s)")
                #expect(try await f.members(#"{"trait": \#(path), "contains": \#(name)}"#) == ["p\(i)"], "contains \(s)")
            }
            let events = try await db.query("SELECT count(*)::int AS c FROM engage.events").first?.decode(Int.self, "c")
            #expect(events == hostile.count)
        }
    }
}
