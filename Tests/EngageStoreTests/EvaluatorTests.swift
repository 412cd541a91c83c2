import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport

@testable import EngageStore

@Suite("Evaluator, in process")
struct EvaluatorTests {
    static let recent = #"{"name": "Recent", "key": "recent", "type": "audience", "condition": {"event": "Order Completed", "within": "30d"}}"#

    @Test("a first evaluation is full; the next reads only the affected profiles and moves what it supersedes to the history")
    func fullThenIncremental() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            for id in ["a", "b", "c", "d"] { try await p.f.profile(id) }
            try await p.f.event("a", "Order Completed", at: Fixture.ago(days: 1))
            try await p.f.event("b", "Order Completed", at: Fixture.ago(days: 29.9)) // leaves the window within 2.4 hours
            try await p.f.event("d", "Product Viewed", at: Fixture.ago(days: 1))
            try await p.define(Self.recent)
            let t0 = Fixture.now, t1 = PipelineFixture.at(hours: 6) // within reconcile_every (24h): no full check

            let first = try await p.evaluate("recent", at: t0)
            #expect(first.kind == .full && first.fullBecause == "first evaluation")
            #expect(first.members == 2 && first.changed == 2)
            #expect(try await p.snapshot("recent").mapValues { $0.since } == ["a": t0, "b": t0])
            #expect(try await p.history("recent").isEmpty)
            #expect(try await p.changeRows("recent") == [["a", "b"]])

            // c buys (the change log); d views a product (an event the definition does not read).
            try await p.f.event("c", "Order Completed", at: PipelineFixture.at(hours: 1))
            try await p.f.event("d", "Product Viewed", at: PipelineFixture.at(hours: 1))
            let second = try await p.evaluate("recent", at: t1)
            #expect(second.kind == .incremental, "\(second.fullBecause ?? "")")
            #expect(second.affected == 2, "b (its event crossed the window's edge) and c (the change log); not a, not d")
            #expect(second.changed == 2 && second.members == 2)
            #expect(try await p.snapshot("recent").mapValues { $0.since } == ["a": t0, "c": t1])
            #expect(try await p.history("recent") == [.init(profile: "b", value: "true", since: t0, until: t1)])
            #expect(try await p.changeRows("recent") == [["a", "b"], ["b", "c"]])
            #expect(try await p.members("recent", at: t0) == ["a", "b"])
            #expect(try await p.members("recent", at: t1) == ["a", "c"])

            // Nothing changed: nothing evaluated, nothing listed.
            let third = try await p.evaluate("recent", at: t1)
            #expect(third.kind == .incremental && third.affected == 0 && third.changed == 0)
            #expect(try await p.changeRows("recent").count == 2)
        }
    }

    @Test("an audience built on a redefined one is evaluated in full, and says why")
    func referenceRedefined() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await p.f.profile("pro", traits: #"{"plan": "pro"}"#)
            try await p.f.profile("free", traits: #"{"plan": "free"}"#)
            for id in ["pro", "free"] { try await p.f.event(id, "Order Completed", at: Fixture.ago(days: 1)) }
            try await p.define(#"{"name": "Paying", "key": "paying", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            try await p.define(#"{"name": "Buyers", "key": "buyers", "type": "audience", "condition": {"all": [{"audience": "paying"}, {"event": "Order Completed", "within": "7d"}]}}"#)
            _ = try await p.evaluate("buyers", at: Fixture.now)
            #expect(Set(try await p.snapshot("buyers").keys) == ["pro"])

            try await p.define(#"{"name": "Paying", "key": "paying", "type": "audience", "condition": {"trait": "plan", "one_of": ["pro", "free"]}}"#)
            let later = PipelineFixture.at(hours: 1)
            let again = try await p.evaluate("buyers", at: later)
            #expect(again.kind == .full && again.fullBecause == "an audience it refers to changed")
            #expect(Set(try await p.snapshot("buyers").keys) == ["pro", "free"])
            #expect(try await p.snapshot("buyers")["free"]?.since == later)
            #expect(try await p.snapshot("buyers")["pro"]?.since == Fixture.now, "an unchanged member keeps its since")
        }
    }

    @Test("a trait's changed value is superseded with its interval; a value set and replaced at one instant is not history")
    func traitHistory() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await p.f.profile("a")
            try await p.f.event("a", "Order Completed", at: Fixture.ago(days: 1), properties: #"{"total": 10}"#)
            try await p.define(#"{"name": "Spend", "key": "spend", "type": "trait", "value": {"aggregate": "sum", "event": "Order Completed", "property": "total"}}"#)
            let t0 = Fixture.now, t1 = PipelineFixture.at(hours: 2)
            _ = try await p.evaluate("spend", at: t0)
            try await p.f.event("a", "Order Completed", at: PipelineFixture.at(hours: 1), properties: #"{"total": 5}"#)
            _ = try await p.evaluate("spend", at: t1)
            #expect(try await p.snapshot("spend")["a"]?.value == "15")
            #expect(try await p.history("spend") == [.init(profile: "a", value: "10", since: t0, until: t1)])
            // Again at the same instant after another purchase: the value of t1 held for no time.
            try await p.f.event("a", "Order Completed", at: PipelineFixture.at(hours: 1), properties: #"{"total": 1}"#)
            _ = try await p.evaluate("spend", at: t1)
            #expect(try await p.snapshot("spend")["a"]?.value == "16")
            #expect(try await p.history("spend").count == 1)
        }
    }

    @Test("when the clock moves back, the new evaluation decides every instant from its own on")
    func clockMovedBack() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await p.f.profile("a")
            try await p.f.event("a", "Order Completed", at: Fixture.ago(days: 1))
            try await p.define(Self.recent)
            let t0 = Fixture.now, late = PipelineFixture.at(hours: 24 * 40), back = PipelineFixture.at(hours: 24 * 10)
            _ = try await p.evaluate("recent", at: t0)
            _ = try await p.evaluate("recent", at: late)
            #expect(try await p.history("recent") == [.init(profile: "a", value: "true", since: t0, until: late)])
            let rewound = try await p.evaluate("recent", at: back)
            #expect(rewound.kind == .full && rewound.fullBecause == "the clock moved backwards")
            #expect(try await p.history("recent") == [.init(profile: "a", value: "true", since: t0, until: back)])
            #expect(try await p.snapshot("recent")["a"]?.since == back)
            #expect(try await p.members("recent", at: PipelineFixture.at(hours: 24 * 5)) == ["a"])
            #expect(try await p.members("recent", at: PipelineFixture.at(hours: 24 * 20)) == ["a"], "the later run no longer decides")
        }
    }
}
