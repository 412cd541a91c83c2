import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("Computed trait semantics on a real PostgreSQL")
struct TraitSemanticsTests {
    /// ann: three orders (10, 30, 20) with products; bob: one order with a non-numeric total;
    /// cat: only an old order; dan: nothing.
    func seed(_ f: Fixture) async throws {
        for p in ["ann", "bob", "cat", "dan"] { try await f.profile(p) }
        try await f.event("ann", "Order Completed", at: Fixture.ago(days: 3), properties: #"{"total": 10, "product": "shoes"}"#)
        try await f.event("ann", "Order Completed", at: Fixture.ago(days: 2), properties: #"{"total": 30, "product": "Hat"}"#)
        try await f.event("ann", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"total": 20, "product": "shoes"}"#)
        try await f.event("bob", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"total": "n/a", "product": "bag"}"#)
        try await f.event("cat", "Order Completed", at: Fixture.ago(days: 200), properties: #"{"total": 99, "product": "old"}"#)
        try await f.event("ann", "Product Viewed", at: Fixture.ago(days: 1), properties: #"{"total": 1000}"#)
    }

    let e = #""event": "Order Completed", "within": "90d""#

    @Test("count, sum, avg, min, max over a window; no matching event means no value")
    func numeric() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await seed(f)
            #expect(try await f.values(#"{"aggregate": "count", \#(e)}"#) == ["ann": "3", "bob": "1"])
            #expect(try await f.values(#"{"aggregate": "count", "event": "Order Completed"}"#) == ["ann": "3", "bob": "1", "cat": "1"])
            #expect(try await f.values(#"{"aggregate": "sum", \#(e), "property": "total"}"#) == ["ann": "60"])
            #expect(try await f.values(#"{"aggregate": "avg", \#(e), "property": "total"}"#) == ["ann": "20"])
            #expect(try await f.values(#"{"aggregate": "min", \#(e), "property": "total"}"#) == ["ann": "10"])
            #expect(try await f.values(#"{"aggregate": "max", \#(e), "property": "total"}"#) == ["ann": "30"])
            #expect(try await f.values(#"{"aggregate": "count", \#(e), "where": [{"property": "total", "gt": 15}]}"#) == ["ann": "2"])
        }
    }

    @Test("first and last by occurred_at")
    func firstLast() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await seed(f)
            #expect(try await f.values(#"{"aggregate": "first", \#(e), "property": "product"}"#) == ["ann": #""shoes""#, "bob": #""bag""#])
            #expect(try await f.values(#"{"aggregate": "last", \#(e), "property": "total"}"#) == ["ann": "20", "bob": #""n/a""#])
        }
    }

    @Test("most_frequent needs a value seen twice; ties are broken alphabetically")
    func mostFrequent() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await seed(f)
            #expect(try await f.values(#"{"aggregate": "most_frequent", \#(e), "property": "product"}"#) == ["ann": #""shoes""#])
            try await f.profile("tie")
            for product in ["pear", "apple", "pear", "apple", "zucchini"] {
                try await f.event("tie", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"product": "\#(product)"}"#)
            }
            let values = try await f.values(#"{"aggregate": "most_frequent", \#(e), "property": "product"}"#)
            #expect(values["tie"] == #""apple""#)
            #expect(values["bob"] == nil) // seen once only
        }
    }

    @Test("unique_list is sorted and distinct; unique_list_count counts it")
    func uniqueList() async throws {
        try await TestDatabase.with { db, _ in
            let f = Fixture(db: db)
            try await seed(f)
            #expect(try await f.values(#"{"aggregate": "unique_list", \#(e), "property": "product"}"#)
                == ["ann": #"["Hat", "shoes"]"#, "bob": #"["bag"]"#])
            #expect(try await f.values(#"{"aggregate": "unique_list_count", \#(e), "property": "product"}"#) == ["ann": "2", "bob": "1"])
        }
    }

    @Test("the value sent when a profile loses its last matching event")
    func emptyValues() {
        #expect(TraitValue.Aggregate.count.emptyValue == .int(0))
        #expect(TraitValue.Aggregate.sum.emptyValue == .int(0))
        #expect(TraitValue.Aggregate.uniqueListCount.emptyValue == .int(0))
        #expect(TraitValue.Aggregate.last.emptyValue == .null)
        #expect(TraitValue.Aggregate.uniqueList.emptyValue == .null)
    }
}
