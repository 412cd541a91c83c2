import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport

@testable import EngageStore

@Suite("What a run's due definitions share: the changed profiles, copied once, in process")
struct SharedChangesTests {
    static let buyers = #"{"name": "Buyers", "key": "buyers", "type": "audience", "condition": {"event": "Order Completed", "within": "30d"}}"#
    static let viewers = #"{"name": "Viewers", "key": "viewers", "type": "audience", "condition": {"event": "Product Viewed", "within": "7d"}}"#

    /// Profiles a, b, c; a bought; both definitions evaluated at ``Fixture/now``; then a views a
    /// product and c buys (the change log lists a and c, not b).
    func prepared(_ p: PipelineFixture) async throws -> SharedChanges? {
        for id in ["a", "b", "c"] { try await p.f.profile(id) }
        try await p.f.event("a", "Order Completed", at: Fixture.ago(days: 1))
        let ids = [try await p.define(Self.buyers).id, try await p.define(Self.viewers).id]
        for key in ["buyers", "viewers"] { _ = try await p.evaluate(key, at: Fixture.now) }
        try await p.f.event("a", "Product Viewed", at: PipelineFixture.at(hours: 1))
        try await p.f.event("c", "Order Completed", at: PipelineFixture.at(hours: 1))
        return try await SharedChanges.prepare(computationIDs: Set(ids), p.db)
    }

    @Test("the changed profiles' events are copied once; evaluations from the copy decide as the events table does")
    func evaluatesFromTheCopy() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            let shared = try #require(try await prepared(p))
            #expect(shared.profiles == 2, "a and c: the profiles the change log lists")
            #expect(try await p.count("SELECT count(*)::int AS n FROM \(ScratchTable.sharedEvents)") == 3)
            let t1 = PipelineFixture.at(hours: 2)
            let buyers = try await p.evaluate("buyers", at: t1, shared: shared)
            #expect(buyers.kind == .incremental && buyers.affected == 1, "c (a viewed a product, an event buyers does not read)")
            #expect(Set(try await p.snapshot("buyers").keys) == ["a", "c"])
            _ = try await p.evaluate("viewers", at: t1, shared: shared)
            #expect(Set(try await p.snapshot("viewers").keys) == ["a"])
            try await SharedChanges.drop(db)
            #expect(try await p.count("SELECT count(*)::int AS n FROM pg_tables WHERE tablename = \(ScratchTable.sharedEvents.name)") == 0)
        }
    }

    @Test("what commits after the copy is not in it, and the next run reads it: the evaluation records the copy's snapshot")
    func laterCommitsReadNextTime() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            let shared = try #require(try await prepared(p))
            // After the copy: a's order is deleted (a is in the copy), b buys (b is not).
            try await db.query("DELETE FROM engage.events WHERE profile_id = 'a' AND event = 'Order Completed'")
            try await p.f.event("b", "Order Completed", at: PipelineFixture.at(hours: 1.5))
            let t1 = PipelineFixture.at(hours: 2)
            _ = try await p.evaluate("buyers", at: t1, shared: shared)
            #expect(Set(try await p.snapshot("buyers").keys) == ["a", "b", "c"],
                    "a as the copy has it (its order); b from the events table (not in the copy)")
            #expect(try await p.history("buyers").isEmpty)
            let next = try await p.evaluate("buyers", at: t1)
            #expect(next.kind == .incremental && next.affected >= 1)
            #expect(Set(try await p.snapshot("buyers").keys) == ["b", "c"], "the deletion after the copy, read by the next run")
            let full = try await p.evaluate("buyers", at: t1, full: "check")
            #expect(full.changed == 0, "the incremental snapshot equals a full evaluation")
        }
    }

    @Test("profile rows are read from the copy too: a profile changed after it is read again by the next run")
    func profileRowsFromTheCopy() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            let shared = try #require(try await prepared(p))
            // After the copy, c loses every id: no longer eligible.
            try await db.query("UPDATE engage.profiles SET user_id = NULL, email = NULL WHERE profile_id = 'c'")
            let t1 = PipelineFixture.at(hours: 2)
            _ = try await p.evaluate("buyers", at: t1, shared: shared)
            #expect(Set(try await p.snapshot("buyers").keys) == ["a", "c"], "c as the copy has its row")
            _ = try await p.evaluate("buyers", at: t1)
            #expect(Set(try await p.snapshot("buyers").keys) == ["a"], "c's change, read by the next run")
        }
    }

    @Test("a definition evaluated since the copy was taken (by another process) is not evaluated from it")
    func newerEvaluationIsNotRewound() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            let shared = try #require(try await prepared(p))
            try await db.query("DELETE FROM engage.events WHERE profile_id = 'a' AND event = 'Order Completed'")
            let t1 = PipelineFixture.at(hours: 2)
            _ = try await p.evaluate("buyers", at: t1)
            #expect(Set(try await p.snapshot("buyers").keys) == ["c"])
            // a's profile changes, so the next evaluation reads it.
            try await db.query("UPDATE engage.profiles SET traits = '{\"plan\": \"pro\"}' WHERE profile_id = 'a'")
            let again = try await p.evaluate("buyers", at: t1, shared: shared)
            #expect(again.affected >= 1)
            #expect(Set(try await p.snapshot("buyers").keys) == ["c"], "a's deleted order, from the copy, would bring it back")
        }
    }

    @Test("one definition, or nothing in the change log: no copy")
    func notWorthACopy() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await p.f.profile("a")
            let ids = [try await p.define(Self.buyers).id, try await p.define(Self.viewers).id]
            for key in ["buyers", "viewers"] { _ = try await p.evaluate(key, at: Fixture.now) }
            #expect(try await SharedChanges.prepare(computationIDs: Set(ids), db) == nil, "nothing changed since")
            try await p.f.event("a", "Order Completed", at: PipelineFixture.at(hours: 1))
            #expect(try await SharedChanges.prepare(computationIDs: [ids[0]], db) == nil, "a single definition reads once anyway")
            #expect(try await SharedChanges.prepare(computationIDs: Set(ids), db) != nil)
        }
    }
}
