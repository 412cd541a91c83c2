import Foundation
import PostgresClient

/// Counts a run records (DESIGN §7).
public struct RunCounts: Sendable, Equatable {
    public var members = 0
    public var entered = 0
    public var exited = 0
    public var changed = 0
    public var unchanged = 0
    public var skipped = 0
    public var superseded = 0
    public init() {}
}

/// Rows of `engage.sync_runs`.
public struct SyncRunStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Starts a run and returns its id.
    public func start(computationID: Int?, destinationID: Int, mode: String, status: String = "running") async throws -> Int {
        let row = try await db.query("""
            INSERT INTO engage.sync_runs (computation_id, destination_id, mode, status) VALUES ($1, $2, $3, $4) RETURNING id
            """, [computationID, destinationID, mode, status]).first
        guard let row else { throw PostgresError(kind: .usage, message: "INSERT … RETURNING gave no row") }
        return try row.decode(Int.self, "id")
    }

    /// Sets the final status, counts, timings and error of a run.
    public func finish(id: Int, status: String, counts: RunCounts? = nil, evaluateMs: Double? = nil, diffMs: Double? = nil,
                       deliverMs: Double? = nil, error: String? = nil) async throws {
        let c = counts ?? RunCounts()
        try await db.query("""
            UPDATE engage.sync_runs SET status = $2, finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE now() END,
                error = coalesce($3, error),
                members = CASE WHEN $4 THEN $5 ELSE members END, entered = CASE WHEN $4 THEN $6 ELSE entered END,
                exited = CASE WHEN $4 THEN $7 ELSE exited END, changed = CASE WHEN $4 THEN $8 ELSE changed END,
                unchanged = CASE WHEN $4 THEN $9 ELSE unchanged END, skipped = CASE WHEN $4 THEN $10 ELSE skipped END,
                superseded = CASE WHEN $4 THEN $11 ELSE superseded END,
                evaluate_ms = coalesce($12, evaluate_ms), diff_ms = coalesce($13, diff_ms), deliver_ms = coalesce($14, deliver_ms)
            WHERE id = $1
            """, [id, status, error, counts != nil, c.members, c.entered, c.exited, c.changed, c.unchanged, c.skipped,
                  c.superseded, evaluateMs, diffMs, deliverMs])
    }
}
