import Foundation
import PostgresClient

/// Rows of `engage.sync_runs`.
public struct SyncRunStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Starts a run and returns its id.
    /// `instant` is the run's instant (its calls' timestamp).
    public func start(computationID: Int?, destinationID: Int, mode: RunMode, status: RunStatus = .running,
                      instant: Date? = nil) async throws -> Int {
        let row = try await db.query("""
            INSERT INTO engage.sync_runs (computation_id, destination_id, mode, status, instant)
            VALUES (\(computationID), \(destinationID), \(mode), \(status), \(instant)) RETURNING id
            """).first
        guard let row else { throw PostgresError(kind: .usage, message: "INSERT … RETURNING gave no row") }
        return try row.decode(Int.self, "id")
    }

    /// Sets the status of a run and, when given, its counts, timings and error. A run still
    /// `running` has no `finished_at`.
    public func finish(id: Int, status: RunStatus, counts: RunCounts? = nil, evaluation: EvaluationOutcome? = nil,
                       evaluateMs: Double? = nil, diffMs: Double? = nil, deliverMs: Double? = nil, error: String? = nil) async throws {
        var update: PostgresQuery = """
            UPDATE engage.sync_runs SET status = \(status),
                finished_at = \(unescaped: status == .running ? "NULL" : "now()"),
                error = coalesce(\(error), error),
                evaluate_ms = coalesce(\(evaluateMs), evaluate_ms), diff_ms = coalesce(\(diffMs), diff_ms),
                deliver_ms = coalesce(\(deliverMs), deliver_ms)
            """
        if let c = counts {
            update.append("""
                , members = \(c.members), entered = \(c.entered), exited = \(c.exited), changed = \(c.changed),
                unchanged = \(c.unchanged), skipped = \(c.skipped), superseded = \(c.superseded)
                """)
        }
        if let e = evaluation {
            update.append("""
                , evaluation = \(e.kind), full_because = \(e.fullBecause), affected = \(e.affected), drift = \(e.drift),
                created_profiles = \(e.createdProfiles)
                """)
        }
        update.append(" WHERE id = \(id)")
        try await db.query(update)
    }
}
