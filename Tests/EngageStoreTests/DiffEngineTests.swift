import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport

@testable import EngageStore

@Suite("DiffEngine, in process")
struct DiffEngineTests {
    static let pro = #"{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#

    /// p1…p4 on the pro plan (p4 with an email but no user id: Vero cannot address it), p5 on the free one.
    static func profiles(_ p: PipelineFixture) async throws {
        for id in ["p1", "p2", "p3"] { try await p.f.profile(id, traits: #"{"plan": "pro"}"#) }
        try await p.f.profile("p4", userID: .some(nil), email: "p4@example.com", traits: #"{"plan": "pro"}"#)
        try await p.f.profile("p5", traits: #"{"plan": "free"}"#)
    }

    @Test("a first sync fills the snapshot and leaves its members to a backlog; expansion enqueues them in profile order, leased")
    func firstSyncAndBacklog() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await Self.profiles(p)
            try await p.define(Self.pro)
            let vero = try await p.destination()
            let first = try await p.run("pro", to: vero, .full, at: Fixture.now)
            #expect(first.evaluation.kind == .full && first.fullDiff)
            #expect(first.counts.members == 4 && first.counts.entered == 3 && first.counts.skipped == 1)
            #expect(Set(try await p.snapshot("pro").keys) == ["p1", "p2", "p3", "p4"])
            #expect(try await p.changeRows("pro").isEmpty, "its one change row (every profile) was read by the only pair, and pruned")
            #expect(try await p.outbox("pro").isEmpty, "members wait in the backlog")
            #expect(try await p.count("SELECT remaining::int AS n FROM engage.backlogs") == 4)

            let engine = try await p.engine("pro", to: vero)
            let lease = DiffEngine.Lease(seconds: 60, worker: "w1")
            let part = try await engine.expand(limit: 2, lease: lease, on: db)
            #expect(part.covered == 2 && part.leased.count == 2)
            #expect(try await p.outbox("pro") == [
                .init(profile: "p1", veroID: "p1", op: "enter", value: "true", status: "pending", lockedBy: "w1"),
                .init(profile: "p2", veroID: "p2", op: "enter", value: "true", status: "pending", lockedBy: "w1"),
            ])
            #expect(try await p.count("SELECT remaining::int AS n FROM engage.backlogs") == 2)
            let rest = try await engine.expand(limit: 10, on: db)
            #expect(rest.covered == 2 && rest.leased.isEmpty)
            #expect(try await p.outbox("pro").map(\.status) == ["pending", "pending", "pending", "skipped"])
            #expect(try await p.count("SELECT count(*)::int AS n FROM engage.backlogs") == 0)
            #expect(try await engine.expand(limit: 10, on: db).covered == 0)
        }
    }

    @Test("an incremental run diffs only the profiles that changed, against what the destination confirmed")
    func scopedDiff() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await Self.profiles(p)
            let vero = try await p.firstSyncConfirmed(Self.pro, expanding: 100).vero

            try await db.query("UPDATE engage.profiles SET traits = '{\"plan\": \"free\"}' WHERE profile_id = 'p2'")
            try await db.query("UPDATE engage.profiles SET traits = '{\"plan\": \"pro\"}' WHERE profile_id = 'p5'")
            let run = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 1))
            #expect(run.evaluation.kind == .incremental && run.evaluation.affected == 2)
            #expect(!run.fullDiff)
            #expect(run.counts.entered == 1 && run.counts.exited == 1 && run.counts.members == 4)
            let sent = try await p.outbox("pro").filter { $0.status == "pending" }
            #expect(sent == [.init(profile: "p2", veroID: "p2", op: "exit", value: "false", status: "pending", lockedBy: nil),
                             .init(profile: "p5", veroID: "p5", op: "enter", value: "true", status: "pending", lockedBy: nil)])

            // Nothing changed since: nothing to diff, nothing enqueued again.
            let quiet = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 2))
            #expect(quiet.counts.entered == 0 && quiet.counts.exited == 0 && quiet.evaluation.affected == 0)
            #expect(try await p.outbox("pro").filter { $0.status == "pending" }.count == 2)
        }
    }

    @Test("after an ETL rewrites every profile's traits, the run evaluates in full (cheaper, and says why) and diffs no one; a changed user id is diffed")
    func etlThenIdentityChange() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, traits)
                SELECT 'p' || lpad(i::text, 5, '0'), 'u' || i, '{"plan": "pro"}' FROM generate_series(1, 12000) i;
                ANALYZE engage.profiles
                """)
            let vero = try await p.firstSyncConfirmed(Self.pro, expanding: 20_000).vero
            #expect(try await p.count("SELECT count(*)::int AS n FROM engage.ledger") == 12_000)

            try await db.query(#"UPDATE engage.profiles SET traits = traits || '{"n": 1}'"#)
            #expect(try await p.count("""
                SELECT cardinality(identity_ids)::int AS n FROM engage.profile_changes WHERE source = 'profiles' ORDER BY position DESC LIMIT 1
                """) == 0, "the ETL changed no one's identity")
            let etl = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 1))
            #expect(etl.evaluation.kind == .full)
            #expect(etl.evaluation.fullBecause?.hasSuffix("a full evaluation costs less") == true, "\(etl.evaluation.fullBecause ?? "")")
            #expect(!etl.fullDiff && etl.counts.entered == 0 && etl.counts.exited == 0)
            #expect(try await p.count("""
                SELECT count(*)::int AS n FROM engage.sync_runs WHERE full_because LIKE '%a full evaluation costs less'
                """) == 1, "the reason is in engage.sync_runs")
            #expect(try await p.outbox("pro").filter { $0.status == "pending" }.isEmpty)

            // Five profiles change user id: evaluated incrementally (five is few), and their old
            // ids are told the exit, the new ones the entry.
            try await db.query("UPDATE engage.profiles SET user_id = 'new-' || user_id WHERE profile_id <= 'p00005'")
            let moved = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 2))
            #expect(moved.evaluation.kind == .incremental && moved.evaluation.affected == 5)
            #expect(!moved.fullDiff && moved.counts.entered == 5 && moved.counts.exited == 5)
            let sent = try await p.outbox("pro").filter { $0.status == "pending" }
            #expect(Set(sent.map { "\($0.op) \($0.veroID ?? "-")" })
                    == Set((1...5).flatMap { ["exit u\($0)", "enter new-u\($0)"] }))
        }
    }

    @Test("a dry run returns examples and writes nothing; the guardrail blocks a run that exits too many")
    func dryRunAndGuardrail() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            for i in 0..<120 { try await p.f.profile("m\(i)", traits: #"{"plan": "pro"}"#) }
            let vero = try await p.firstSyncConfirmed(Self.pro, expanding: 1000).vero
            try await db.query("UPDATE engage.profiles SET traits = '{}' WHERE profile_id < 'm5'")
            let leaving = try await p.count("SELECT count(*)::int AS n FROM engage.profiles WHERE profile_id < 'm5'")

            let outboxBefore = try await p.outbox("pro").count
            let plan = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 1), dryRun: true)
            #expect(plan.counts.exited == leaving)
            #expect(plan.examples.count == 5 && plan.examples.allSatisfy { $0.op == .exit })
            #expect(try await p.outbox("pro").count == outboxBefore)
            #expect(try await p.snapshot("pro").count == 120, "the evaluation rolled back with the plan")

            let blocked = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 1),
                                          guardrail: Guardrail(maxExitRatio: 0.1))
            #expect(blocked.blocked != nil)
            #expect(try await p.outbox("pro").count == outboxBefore)
            #expect(try await p.snapshot("pro").count == 120)

            let forced = try await p.run("pro", to: vero, .incremental, at: PipelineFixture.at(hours: 1))
            #expect(forced.blocked == nil && forced.counts.exited == leaving)
            #expect(try await p.outbox("pro").filter { $0.op == "exit" }.count == leaving)
        }
    }

    @Test("a removed definition's diff tells every confirmed member the exit, and drops its backlog")
    func removal() async throws {
        try await TestDatabase.with { db, _ in
            let p = PipelineFixture(db: db)
            try await Self.profiles(p)
            let vero = try await p.firstSyncConfirmed(Self.pro, expanding: 2).vero
            let removed = try await p.run("pro", to: vero, .remove, at: PipelineFixture.at(hours: 1))
            #expect(removed.counts.exited == 2, "p1 and p2 were confirmed; p3 was never sent")
            #expect(try await p.outbox("pro").filter { $0.status == "pending" }.map(\.profile) == ["p1", "p2"])
            #expect(try await p.snapshot("pro").isEmpty)
            #expect(try await p.count("SELECT count(*)::int AS n FROM engage.backlogs") == 0)
            #expect(Set(try await p.history("pro").map(\.profile)) == ["p1", "p2", "p3", "p4"])
        }
    }
}
