import EngageCore
import Foundation
import PostgresClient

/// Per (definition, destination) bookkeeping: locks, schedule, stale runs, outcomes.
public struct PairStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// A session-level advisory lock serialising runs of one pair across processes and machines.
    /// Held until ``unlock(computationID:destinationID:)`` or until the connection closes
    /// (a crashed process releases it).
    public func tryLock(computationID: Int, destinationID: Int) async throws -> Bool {
        try await db.query("SELECT pg_try_advisory_lock(\(Self.lockKey(computationID, destinationID))) AS locked")
            .first?.decode(Bool.self, "locked") ?? false
    }

    public func unlock(computationID: Int, destinationID: Int) async throws {
        try await db.query("SELECT pg_advisory_unlock(\(Self.lockKey(computationID, destinationID)))")
    }

    /// Positive and above the 32-bit range, so it never meets a `hashtext` lock.
    static func lockKey(_ computationID: Int, _ destinationID: Int) -> Int {
        (computationID << 32) | (destinationID & 0xFFFF_FFFF)
    }

    /// Runs of this pair left `running` by a process that died (we hold the pair's lock, so no
    /// live process is running it) become `failed`.
    @discardableResult
    public func failStaleRuns(computationID: Int, destinationID: Int) async throws -> Int {
        try await db.query("""
            UPDATE engage.sync_runs SET status = 'failed', finished_at = now(),
                error = 'interrupted: the process stopped before the run finished; its committed changes are delivered by later runs'
            WHERE computation_id = \(computationID) AND destination_id = \(destinationID) AND status = 'running'
            """).affectedRows
    }

    /// When the pair last ran successfully (succeeded or partial), or nil: the run's instant, so
    /// that the schedule keeps the clock `ENGAGE_SYNC_NOW` sets (runs before it had none).
    public func lastSuccessfulRun(computationID: Int, destinationID: Int) async throws -> Date? {
        try await db.query("""
            SELECT max(coalesce(instant, started_at)) AS at FROM engage.sync_runs
            WHERE computation_id = \(computationID) AND destination_id = \(destinationID) AND status IN ('succeeded', 'partial')
            """).first?.decode(Date?.self, "at")
    }

    /// When the pair is next due (``engage.pair_schedule``, where the schedule is computed once),
    /// or nil when it never ran successfully: due now.
    public func nextDue(computationID: Int, destinationID: Int) async throws -> Date? {
        try await db.query("""
            SELECT next_due FROM engage.pair_schedule
            WHERE computation_id = \(computationID) AND destination_id = \(destinationID)
            """).first?.decode(Date?.self, "next_due")
    }

    /// What each definition was last evaluated under (``DefinitionGraph/evaluatedDocument(_:audiences:)``),
    /// by computation id: a definition whose document, or an audience's it is built on, differs
    /// is due now.
    public func evaluatedDocuments() async throws -> [Int: JSONValue] {
        var documents: [Int: JSONValue] = [:]
        for row in try await db.query("SELECT computation_id, definition::text AS definition FROM engage.evaluations") {
            documents[try row.decode(Int.self, "computation_id")] = try JSONValue.parse(try row.decode(String.self, "definition"))
        }
        return documents
    }

    /// How this run's rows ended up.
    public struct RowOutcome: Sendable {
        public var delivered = 0, pending = 0, failed = 0, skipped = 0
        /// Pending rows whose last attempt failed (waiting for a retry).
        public var retrying = 0
    }

    public func rowOutcome(runID: Int) async throws -> RowOutcome {
        // A full sync's members its backlog has not reached yet are on their way: pending (its
        // kept count, as `status` shows it).
        let rows = try await db.query("""
            SELECT status, last_error IS NOT NULL AS errored, count(*)::int AS n
            FROM engage.outbox WHERE run_id = \(runID) GROUP BY 1, 2
            UNION ALL
            SELECT 'pending', false, remaining::int FROM engage.backlogs WHERE run_id = \(runID)
            """)
        var outcome = RowOutcome()
        for row in rows {
            let n = try row.decode(Int.self, "n")
            switch try row.decode(OutboxStatus.self, "status") {
            case .delivered: outcome.delivered += n
            case .pending:
                outcome.pending += n
                if try row.decode(Bool.self, "errored") { outcome.retrying += n }
            case .failed, .rejected: outcome.failed += n
            case .skipped: outcome.skipped += n
            case .superseded: break
            }
        }
        return outcome
    }

    /// The space id created at migrate time.
    public func spaceID() async throws -> String {
        try await db.query("SELECT value FROM engage.settings WHERE key = 'space_id'").first?.decode(String.self, "value") ?? "unknown"
    }
}
