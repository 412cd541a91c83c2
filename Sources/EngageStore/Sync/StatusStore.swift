import EngageCore
import Foundation
import PostgresClient

/// One (definition, destination) pair as `engage-sync status` shows it (`engage.sync_status`).
public struct PairStatus: Sendable {
    public var key: String
    public var destination: String
    public var type: Definition.Kind
    public var members: Int
    /// Vero users the destination confirmed `true` (or a trait value) for.
    public var deliveredTrue: Int
    /// Pending outbox rows, and the members a backlog has not reached yet (``backlog``).
    public var pending: Int
    public var failed: Int
    /// Outbox rows skipped (for instance for want of a Vero user id), resolved or not.
    public var skipped: Int
    /// Members of a full sync or resync its backlog has not reached yet (counted in `pending`;
    /// some may turn out unchanged at the destination, or without a Vero id).
    public var backlog: Int
    public var lastRunAt: Date?
    public var lastRunStatus: RunStatus?
    public var lastRunMode: RunMode?
    /// The last run's wall time; nil while it runs.
    public var lastRunSeconds: Double?
    /// Nil for a disabled definition.
    public var nextDue: Date?
    /// Since when delivery to the destination is paused, or nil.
    public var destinationPausedAt: Date?
    /// Why it is paused (e.g. the HTTP 401 that paused it).
    public var destinationPausedReason: String?
}

/// Reads what `status` prints.
public struct StatusStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Every active pair, by key then destination.
    public func pairs() async throws -> [PairStatus] {
        try await db.query("""
            SELECT s.key, s.destination, s.type, s.members::int, s.delivered_true::int, s.pending::int, s.failed::int,
                   s.skipped::int, s.backlog::int, s.last_run_at, s.last_run_status, last_run.mode AS last_run_mode, last_run.seconds AS last_run_seconds,
                   s.next_due, s.destination_paused_at AS paused_at, d.paused_reason
            FROM engage.sync_status s
            JOIN engage.computations c ON c.key = s.key
            JOIN engage.destinations d ON d.name = s.destination
            LEFT JOIN LATERAL (SELECT r.mode, extract(epoch FROM r.finished_at - r.started_at)::float8 AS seconds
                               FROM engage.sync_runs r WHERE r.computation_id = c.id AND r.destination_id = d.id
                               ORDER BY r.started_at DESC, r.id DESC LIMIT 1) last_run ON true
            ORDER BY s.key, s.destination
            """).map { row in
            PairStatus(key: try row.decode(String.self, "key"), destination: try row.decode(String.self, "destination"),
                       type: try row.decode(Definition.Kind.self, "type"), members: try row.decode(Int.self, "members"),
                       deliveredTrue: try row.decode(Int.self, "delivered_true"), pending: try row.decode(Int.self, "pending"),
                       failed: try row.decode(Int.self, "failed"), skipped: try row.decode(Int.self, "skipped"),
                       backlog: try row.decode(Int.self, "backlog"),
                       lastRunAt: try row.decode(Date?.self, "last_run_at"),
                       lastRunStatus: try row.decode(RunStatus?.self, "last_run_status"),
                       lastRunMode: try row.decode(RunMode?.self, "last_run_mode"),
                       lastRunSeconds: try row.decode(Double?.self, "last_run_seconds"),
                       nextDue: try row.decode(Date?.self, "next_due"), destinationPausedAt: try row.decode(Date?.self, "paused_at"),
                       destinationPausedReason: try row.decode(String?.self, "paused_reason"))
        }
    }

    /// Changes waiting for a destination: pending outbox rows and the members its backlogs
    /// have not reached yet (as `engage.sync_status` counts them).
    public func waiting(destination name: String) async throws -> Int {
        try await db.query("""
            SELECT \(Self.waiting)::int AS n FROM engage.destinations d WHERE d.name = \(name)
            """).first?.decode(Int.self, "n") ?? 0
    }

    /// The changes waiting for destination `d`: its pairs' `engage.pair_waiting` (forwarded
    /// calls included), for `status`, the progress line and the `engage_sync_outbox_pending` gauge.
    static let waiting: PostgresQuery = """
        coalesce((SELECT sum(w.waiting) FROM engage.pair_waiting w WHERE w.destination_id = d.id), 0)
        """
}
