import Foundation
import PostgresClient

/// A place audiences are synced to. Holds the *name* of the variable with the auth token,
/// never the token.
public struct Destination: Sendable, Hashable {
    public var id: Int
    public var name: String
    public var kind: DestinationKind
    public var baseURL: String
    public var tokenEnv: String
    /// Requests per second.
    public var rate: Double
    /// Requests in flight at most.
    public var concurrency: Int
    public var maxAttempts: Int
    public var maxExitRatio: Double
    public var allowEmailID: Bool
    public var enabled: Bool
    /// Why delivery to it is paused (Vero rejected the token), or nil when it is not.
    public var pausedReason: String?
}

/// The kinds of destination the engine can send to; `engage.destinations.kind`.
public enum DestinationKind: String, Sendable, CaseIterable, PostgresEncodable, PostgresDecodable {
    case vero
}

/// Settings for a new destination; nil keeps the default.
public struct DestinationSettings: Sendable {
    public var baseURL: String?
    public var tokenEnv: String?
    public var rate: Double?
    public var concurrency: Int?
    public var maxAttempts: Int?
    public var maxExitRatio: Double?
    public var allowEmailID: Bool?

    public init(baseURL: String? = nil, tokenEnv: String? = nil, rate: Double? = nil, concurrency: Int? = nil,
                maxAttempts: Int? = nil, maxExitRatio: Double? = nil, allowEmailID: Bool? = nil) {
        self.baseURL = baseURL
        self.tokenEnv = tokenEnv
        self.rate = rate
        self.concurrency = concurrency
        self.maxAttempts = maxAttempts
        self.maxExitRatio = maxExitRatio
        self.allowEmailID = allowEmailID
    }
}

/// A destination name that does not exist.
public struct UnknownDestination: Error, Sendable, CustomStringConvertible {
    public var name: String
    public var description: String { "no destination is named \(name.debugDescription) (see `engage-sync destination list`)" }
}

/// Delivery to a destination is paused (docs/operations.md#running-as-a-service-engage-sync-serve):
/// nothing is claimed for it.
public struct DestinationPaused: Error, Sendable, CustomStringConvertible {
    public var destination: String
    public var reason: String
    public init(destination: String, reason: String) {
        self.destination = destination
        self.reason = reason
    }
    public var description: String {
        "destination \(destination) is paused (\(reason)); its rows stay pending. Fix the token, then `engage-sync destination resume \(destination)`"
    }
}

/// Reads and writes `engage.destinations`.
public struct DestinationRepository: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    static let columns = "id, name, kind, base_url, token_env, rate, concurrency, max_attempts, max_exit_ratio, allow_email_id, enabled, paused_reason"

    /// Adds a destination, or updates the settings given for an existing one of that name. A
    /// change of settings resumes a paused destination.
    @discardableResult
    public func upsert(name: String, kind: DestinationKind = .vero, settings: DestinationSettings) async throws -> Destination {
        // Every setting given equals the stored one.
        let unchanged: PostgresQuery = """
            ((coalesce(\(settings.baseURL), d.base_url), coalesce(\(settings.tokenEnv), d.token_env), coalesce(\(settings.rate), d.rate),
              coalesce(\(settings.concurrency), d.concurrency), coalesce(\(settings.maxAttempts), d.max_attempts),
              coalesce(\(settings.maxExitRatio), d.max_exit_ratio), coalesce(\(settings.allowEmailID), d.allow_email_id))
             IS NOT DISTINCT FROM
             (d.base_url, d.token_env, d.rate, d.concurrency, d.max_attempts, d.max_exit_ratio, d.allow_email_id))
            """
        let rows = try await db.query("""
            INSERT INTO engage.destinations AS d (name, kind, base_url, token_env, rate, concurrency, max_attempts,
                                                  max_exit_ratio, allow_email_id)
            VALUES (\(name), \(kind), coalesce(\(settings.baseURL), 'https://api.getvero.com'),
                    coalesce(\(settings.tokenEnv), 'VERO_AUTH_TOKEN'), coalesce(\(settings.rate), 100),
                    coalesce(\(settings.concurrency), 16), coalesce(\(settings.maxAttempts), 10),
                    coalesce(\(settings.maxExitRatio), 0.5), coalesce(\(settings.allowEmailID), false))
            ON CONFLICT (name) DO UPDATE SET
                base_url = coalesce(\(settings.baseURL), d.base_url), token_env = coalesce(\(settings.tokenEnv), d.token_env),
                rate = coalesce(\(settings.rate), d.rate), concurrency = coalesce(\(settings.concurrency), d.concurrency),
                max_attempts = coalesce(\(settings.maxAttempts), d.max_attempts),
                max_exit_ratio = coalesce(\(settings.maxExitRatio), d.max_exit_ratio),
                allow_email_id = coalesce(\(settings.allowEmailID), d.allow_email_id),
                paused_at = CASE WHEN \(unchanged) THEN d.paused_at END,
                paused_reason = CASE WHEN \(unchanged) THEN d.paused_reason END
            RETURNING \(unescaped: Self.columns)
            """)
        guard let row = rows.first else { throw UnknownDestination(name: name) }
        return try Self.decode(row)
    }

    public func all() async throws -> [Destination] {
        try await db.query("SELECT \(unescaped: Self.columns) FROM engage.destinations ORDER BY name").map(Self.decode)
    }

    /// Where delivery goes — the one choice `deliver`, `run` and `serve` make: every enabled
    /// destination (or the one named, enabled or not), split into those to send to and those
    /// paused (reported; their rows stay pending). Ordered by name.
    public func deliveryTargets(only name: String? = nil) async throws -> (active: [Destination], paused: [Destination]) {
        let chosen = if let name { [try await find(name: name)] } else { try await all().filter(\.enabled) }
        return (chosen.filter { $0.pausedReason == nil }, chosen.filter { $0.pausedReason != nil })
    }

    public func find(name: String) async throws -> Destination {
        guard let row = try await db.query("SELECT \(unescaped: Self.columns) FROM engage.destinations WHERE name = \(name)").first else {
            throw UnknownDestination(name: name)
        }
        return try Self.decode(row)
    }

    /// Pauses delivery to a destination, saying why.
    public func pause(id: Int, reason: String) async throws {
        try await db.query("UPDATE engage.destinations SET paused_at = now(), paused_reason = \(reason) WHERE id = \(id)")
    }

    /// Resumes delivery to a paused destination (a no-op for one that is not).
    @discardableResult
    public func resume(name: String) async throws -> Destination {
        guard let row = try await db.query("""
            UPDATE engage.destinations SET paused_at = NULL, paused_reason = NULL WHERE name = \(name)
            RETURNING \(unescaped: Self.columns)
            """).first else { throw UnknownDestination(name: name) }
        return try Self.decode(row)
    }

    static func decode(_ row: PostgresRow) throws -> Destination {
        Destination(id: try row.decode(Int.self, "id"), name: try row.decode(String.self, "name"),
                    kind: try row.decode(DestinationKind.self, "kind"), baseURL: try row.decode(String.self, "base_url"),
                    tokenEnv: try row.decode(String.self, "token_env"), rate: try row.decode(Double.self, "rate"),
                    concurrency: try row.decode(Int.self, "concurrency"), maxAttempts: try row.decode(Int.self, "max_attempts"),
                    maxExitRatio: try row.decode(Double.self, "max_exit_ratio"),
                    allowEmailID: try row.decode(Bool.self, "allow_email_id"), enabled: try row.decode(Bool.self, "enabled"),
                    pausedReason: try row.decode(String?.self, "paused_reason"))
    }
}
