import EngageCore
import Foundation
import PostgresClient

/// A definition as its status page shows it.
public struct DefinitionSummary: Sendable {
    public var key: String
    public var name: String
    public var type: Definition.Kind
    public var enabled: Bool
    /// The JSON document as defined, pretty-printed by PostgreSQL.
    public var definitionJSON: String
    /// The query of a SQL definition, nil for a condition.
    public var sql: String?
    /// `sync_every` as PostgreSQL prints an interval (`01:00:00`, `1 day`).
    public var syncEvery: String
    public var members: Int
}

/// One run of a definition (`engage.definition_runs`).
public struct DefinitionRun: Sendable {
    public var id: Int
    public var destination: String
    public var mode: RunMode
    public var status: RunStatus
    /// Nil for runs before incremental evaluation.
    public var evaluation: EvaluationKind?
    public var members: Int
    public var entered: Int
    public var exited: Int
    public var changed: Int
    public var skipped: Int
    public var startedAt: Date
    /// Wall time of the run, nil while it runs.
    public var seconds: Double?
    public var evaluateMs: Double?
    public var diffMs: Double?
    public var deliverMs: Double?
    public var error: String?
}

/// A change a run wrote to the outbox (`engage.definition_changes`).
public struct RecentChange: Sendable {
    public var runID: Int
    public var destination: String
    /// The Vero user the change addresses (nil when skipped for want of one).
    public var userID: String?
    public var op: OutboxOp
    /// The value as JSON text.
    public var value: String?
    public var status: OutboxStatus
    public var reason: String?
    public var createdAt: Date
}

/// Unresolved failures of one kind (`engage.definition_failures`).
public struct FailureGroup: Sendable {
    public var destination: String
    public var status: OutboxStatus
    public var reason: String?
    public var statusCode: Int?
    public var rows: Int
    /// Up to three users (Vero ids, else profile ids), latest first.
    public var examples: [String]
    public var lastAt: Date
}

/// A destination as its status page shows it; never its token.
public struct DestinationSummary: Sendable {
    public var name: String
    public var baseURL: String
    public var rate: Double
    public var concurrency: Int
    public var maxAttempts: Int
    public var enabled: Bool
    public var pausedAt: Date?
    public var pausedReason: String?
}

/// One run as its destination saw it (`engage.destination_runs`).
public struct DestinationRun: Sendable {
    public var id: Int
    /// The definition's key, nil for `forward`.
    public var key: String?
    public var mode: RunMode
    public var status: RunStatus
    public var startedAt: Date
    public var rows: Int
    public var delivered: Int
    public var pending: Int
    public var failed: Int
    public var rejected: Int
    public var skipped: Int
    /// Delivered rows per second, from the first 2xx to the last.
    public var perSecond: Double?
    /// From a change written to Vero's 2xx: median and 95th percentile, in milliseconds.
    public var p50Ms: Double?
    public var p95Ms: Double?
}

/// Unresolved failures of a destination for one HTTP status (`engage.destination_failures`).
public struct StatusCodeFailures: Sendable {
    /// nil: no answer (a network error, a timeout) or never sent.
    public var statusCode: Int?
    public var status: OutboxStatus
    public var rows: Int
    public var reason: String?
    public var lastAt: Date
}

/// The reads of the status page: the functions in sql/views/ (`engage.definition_runs`, …), which an analyst
/// can call in psql for the same answers.
public struct StatusPageStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// A definition not removed, or nil.
    public func definition(_ key: String) async throws -> DefinitionSummary? {
        try await db.query("""
            SELECT c.key, c.name, c.type, c.enabled, jsonb_pretty(c.definition) AS definition, c.definition ->> 'sql' AS sql,
                   c.sync_every::text AS sync_every,
                   coalesce((SELECT e.members FROM engage.evaluations e WHERE e.computation_id = c.id), 0)::int AS members
            FROM engage.computations c WHERE c.key = \(key) AND c.removed_at IS NULL
            """).first.map { row in
            DefinitionSummary(key: try row.decode(String.self, "key"), name: try row.decode(String.self, "name"),
                              type: try row.decode(Definition.Kind.self, "type"), enabled: try row.decode(Bool.self, "enabled"),
                              definitionJSON: try row.decode(String.self, "definition"), sql: try row.decode(String?.self, "sql"),
                              syncEvery: try row.decode(String.self, "sync_every"), members: try row.decode(Int.self, "members"))
        }
    }

    /// The last `limit` runs of a definition, oldest first.
    public func runs(of key: String, limit: Int = 1000) async throws -> [DefinitionRun] {
        try await db.query("""
            SELECT run_id, destination, mode, status, evaluation, members, entered, exited, changed, skipped,
                   started_at, seconds, evaluate_ms, diff_ms, deliver_ms, error
            FROM engage.definition_runs(\(key), \(limit)::int)
            """).map { row in
            DefinitionRun(id: try row.decode(Int.self, "run_id"), destination: try row.decode(String.self, "destination"),
                          mode: try row.decode(RunMode.self, "mode"), status: try row.decode(RunStatus.self, "status"),
                          evaluation: try row.decode(EvaluationKind?.self, "evaluation"), members: try row.decode(Int.self, "members"),
                          entered: try row.decode(Int.self, "entered"), exited: try row.decode(Int.self, "exited"),
                          changed: try row.decode(Int.self, "changed"), skipped: try row.decode(Int.self, "skipped"),
                          startedAt: try row.decode(Date.self, "started_at"),
                          seconds: try row.decode(Double?.self, "seconds"), evaluateMs: try row.decode(Double?.self, "evaluate_ms"),
                          diffMs: try row.decode(Double?.self, "diff_ms"), deliverMs: try row.decode(Double?.self, "deliver_ms"),
                          error: try row.decode(String?.self, "error"))
        }
    }

    /// Changes the definition's last runs wrote, newest first.
    public func changes(of key: String, limit: Int = 20) async throws -> [RecentChange] {
        try await db.query("""
            SELECT run_id, destination, user_id, op, value::text AS value, status, reason, created_at
            FROM engage.definition_changes(\(key), \(limit)::int)
            """).map { row in
            RecentChange(runID: try row.decode(Int.self, "run_id"), destination: try row.decode(String.self, "destination"),
                         userID: try row.decode(String?.self, "user_id"), op: try row.decode(OutboxOp.self, "op"),
                         value: try row.decode(String?.self, "value"), status: try row.decode(OutboxStatus.self, "status"),
                         reason: try row.decode(String?.self, "reason"), createdAt: try row.decode(Date.self, "created_at"))
        }
    }

    /// The definition's unresolved failures grouped by destination, status and reason.
    public func failures(of key: String) async throws -> [FailureGroup] {
        try await db.query("""
            SELECT destination, status, reason, status_code, rows::int AS rows, coalesce(examples, '{}') AS examples, last_at
            FROM engage.definition_failures(\(key))
            """).map { row in
            FailureGroup(destination: try row.decode(String.self, "destination"), status: try row.decode(OutboxStatus.self, "status"),
                         reason: try row.decode(String?.self, "reason"), statusCode: try row.decode(Int?.self, "status_code"),
                         rows: try row.decode(Int.self, "rows"), examples: try row.decode([String].self, "examples"),
                         lastAt: try row.decode(Date.self, "last_at"))
        }
    }

    /// A destination, or nil.
    public func destination(_ name: String) async throws -> DestinationSummary? {
        try await db.query("""
            SELECT name, base_url, rate, concurrency, max_attempts, enabled, paused_at, paused_reason
            FROM engage.destinations WHERE name = \(name)
            """).first.map { row in
            DestinationSummary(name: try row.decode(String.self, "name"), baseURL: try row.decode(String.self, "base_url"),
                               rate: try row.decode(Double.self, "rate"), concurrency: try row.decode(Int.self, "concurrency"),
                               maxAttempts: try row.decode(Int.self, "max_attempts"), enabled: try row.decode(Bool.self, "enabled"),
                               pausedAt: try row.decode(Date?.self, "paused_at"), pausedReason: try row.decode(String?.self, "paused_reason"))
        }
    }

    /// The destination's last `limit` runs, newest first.
    public func runs(toDestination name: String, limit: Int = 20) async throws -> [DestinationRun] {
        try await db.query("""
            SELECT run_id, key, mode, status, started_at,
                   rows::int AS rows, delivered::int AS delivered, pending::int AS pending, failed::int AS failed,
                   rejected::int AS rejected, skipped::int AS skipped, per_second, p50_ms, p95_ms
            FROM engage.destination_runs(\(name), \(limit)::int)
            """).map { row in
            DestinationRun(id: try row.decode(Int.self, "run_id"), key: try row.decode(String?.self, "key"),
                           mode: try row.decode(RunMode.self, "mode"), status: try row.decode(RunStatus.self, "status"),
                           startedAt: try row.decode(Date.self, "started_at"), rows: try row.decode(Int.self, "rows"),
                           delivered: try row.decode(Int.self, "delivered"), pending: try row.decode(Int.self, "pending"),
                           failed: try row.decode(Int.self, "failed"), rejected: try row.decode(Int.self, "rejected"),
                           skipped: try row.decode(Int.self, "skipped"), perSecond: try row.decode(Double?.self, "per_second"),
                           p50Ms: try row.decode(Double?.self, "p50_ms"), p95Ms: try row.decode(Double?.self, "p95_ms"))
        }
    }

    /// The destination's unresolved failures by HTTP status code.
    public func failures(toDestination name: String) async throws -> [StatusCodeFailures] {
        try await db.query("""
            SELECT status_code, status, rows::int AS rows, reason, last_at
            FROM engage.destination_failures(\(name))
            """).map { row in
            StatusCodeFailures(statusCode: try row.decode(Int?.self, "status_code"), status: try row.decode(OutboxStatus.self, "status"),
                               rows: try row.decode(Int.self, "rows"), reason: try row.decode(String?.self, "reason"),
                               lastAt: try row.decode(Date.self, "last_at"))
        }
    }
}
