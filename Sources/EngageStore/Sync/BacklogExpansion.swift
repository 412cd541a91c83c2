import EngageCore
import Foundation
import PostgresClient

/// A full sync's or a resync's members, enqueued a batch at a time as delivery asks
/// (`engage.backlogs`): the pair's backlog, its cursor, and the lease of the rows it enqueues.
extension DiffEngine {
    /// Rows enqueued already leased to the worker that will send them.
    public struct Lease: Sendable {
        public var seconds: Double
        public var worker: String
        public init(seconds: Double, worker: String) {
            self.seconds = seconds
            self.worker = worker
        }
    }

    /// A pair's open backlog: the members of a full sync or resync still to enqueue.
    struct Backlog {
        var runID: Int
        var resync: Bool
        /// Members up to this profile id are enqueued; nil: none yet.
        var afterProfile: String?
    }

    func loadBacklog(_ db: PostgresConnection, lock: Bool = false) async throws -> Backlog? {
        guard let row = try await db.query("""
            SELECT run_id, resync, after_profile FROM engage.backlogs b WHERE \(pair("b"))
            \(unescaped: lock ? "FOR UPDATE SKIP LOCKED" : "")
            """).first else { return nil }
        return Backlog(runID: try row.decode(Int.self, "run_id"), resync: try row.decode(Bool.self, "resync"),
                       afterProfile: try row.decode(String?.self, "after_profile"))
    }

    /// A full diff's members (the snapshot's `members` rows) go to a (new) backlog; a removal
    /// (nil) has none, and drops any.
    func saveBacklog(runID: Int, resync: Bool, members: Int?, _ db: PostgresConnection) async throws {
        guard let members else {
            try await db.query("DELETE FROM engage.backlogs b WHERE \(pair("b"))")
            return
        }
        try await db.query("""
            INSERT INTO engage.backlogs (destination_id, computation_id, run_id, resync, remaining)
            VALUES (\(destination.id), \(computationID), \(runID), \(resync), \(members))
            ON CONFLICT (destination_id, computation_id) DO UPDATE SET
                run_id = EXCLUDED.run_id, resync = EXCLUDED.resync, after_profile = NULL, created_at = now(),
                remaining = EXCLUDED.remaining
            """)
    }

    /// Enqueues the next `limit` members (in profile order) of the pair's open backlog as the
    /// full sync or resync that wrote it would have — against the snapshot, the ledger and the
    /// pending rows as they are now — and moves the backlog past them, in one transaction.
    /// Returns how many members it covered (0: no backlog, or another worker holds it).
    /// With a lease, the rows it enqueues are leased to `lease.worker` for `lease.seconds` (the
    /// caller sends them: no separate claim to write), and their ids returned.
    public func expand(limit: Int, lease: Lease? = nil, on db: PostgresConnection) async throws -> (covered: Int, leased: [Int]) {
        try await db.withTransaction { tx in
            let db = tx.connection
            // The snapshot lock first, as a run takes it (waiting for a run refreshing it), then
            // the backlog row.
            try await db.query("SELECT pg_advisory_xact_lock(\(Self.snapshotLockClass)::int, \(computationID)::int)")
            guard let backlog = try await loadBacklog(db, lock: true) else { return (0, []) }
            // The cursor on both sides: the planner does not carry an inequality across the
            // join, and a merge join would otherwise read every profile before the cursor.
            let after = backlog.afterProfile ?? ""
            // The batch is both the rows to hold and the diff's scope.
            let batch = ScratchTable.current
            try await batch.create(as: """
                SELECT m.profile_id, m.value, p.user_id, p.email, false
                FROM engage.memberships m JOIN engage.profiles p ON p.profile_id = m.profile_id
                WHERE m.computation_id = \(computationID) AND m.profile_id > \(after)::text AND p.profile_id > \(after)::text
                ORDER BY m.profile_id LIMIT \(limit)
                """, db)
            try await batch.indexAndAnalyze(db)
            let row = try await db.query("SELECT count(*)::int AS n, max(profile_id) AS last FROM \(batch)").first
            let covered = try row?.decode(Int.self, "n") ?? 0
            let mode: RunMode = backlog.resync ? .resync : .full
            var outcome = DiffOutcome()
            let desired = try await compare(batch, mode, scope: batch, exits: false, count: false, db, into: &outcome)
            _ = try await supersede(desired, current: batch, scope: batch, db)
            let leased = try await enqueue(desired, mode, runID: backlog.runID, members: true, lease: lease, db).leased
            if covered < limit {
                try await db.query("DELETE FROM engage.backlogs b WHERE \(pair("b"))")
            } else {
                // Past the members it read, and any whose profile row is gone (not read, passed).
                let last = try row?.decode(String?.self, "last")
                try await db.query("""
                    UPDATE engage.backlogs b SET after_profile = \(last),
                        remaining = b.remaining - (SELECT count(*) FROM engage.memberships m
                                                   WHERE m.computation_id = \(computationID)
                                                     AND m.profile_id > \(after)::text AND m.profile_id <= \(last)::text)
                    WHERE \(pair("b"))
                    """)
            }
            return (covered, leased)
        }
    }
}
