import Foundation
import PostgresClient

/// A place audiences are synced to. Holds the *name* of the variable with the auth token,
/// never the token.
public struct Destination: Sendable, Hashable {
    public var id: Int
    public var name: String
    public var kind: String
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

/// Reads and writes `engage.destinations`.
public struct DestinationRepository: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    static let columns = "id, name, kind, base_url, token_env, rate, concurrency, max_attempts, max_exit_ratio, allow_email_id, enabled"

    /// Adds a destination, or updates the settings given for an existing one of that name.
    @discardableResult
    public func upsert(name: String, kind: String = "vero", settings: DestinationSettings) async throws -> Destination {
        let rows = try await db.query("""
            INSERT INTO engage.destinations (name, kind, base_url, token_env, rate, concurrency, max_attempts, max_exit_ratio, allow_email_id)
            VALUES ($1, $2, coalesce($3, 'https://api.getvero.com'), coalesce($4, 'VERO_AUTH_TOKEN'), coalesce($5, 100),
                    coalesce($6, 16), coalesce($7, 10), coalesce($8, 0.5), coalesce($9, false))
            ON CONFLICT (name) DO UPDATE SET
                base_url = coalesce($3, destinations.base_url), token_env = coalesce($4, destinations.token_env),
                rate = coalesce($5, destinations.rate), concurrency = coalesce($6, destinations.concurrency),
                max_attempts = coalesce($7, destinations.max_attempts), max_exit_ratio = coalesce($8, destinations.max_exit_ratio),
                allow_email_id = coalesce($9, destinations.allow_email_id)
            RETURNING \(Self.columns)
            """, [name, kind, settings.baseURL, settings.tokenEnv, settings.rate, settings.concurrency,
                  settings.maxAttempts, settings.maxExitRatio, settings.allowEmailID])
        guard let row = rows.first else { throw UnknownDestination(name: name) }
        return try Self.decode(row)
    }

    public func all() async throws -> [Destination] {
        try await db.query("SELECT \(Self.columns) FROM engage.destinations ORDER BY name").map(Self.decode)
    }

    public func find(name: String) async throws -> Destination {
        guard let row = try await db.query("SELECT \(Self.columns) FROM engage.destinations WHERE name = $1", [name]).first else {
            throw UnknownDestination(name: name)
        }
        return try Self.decode(row)
    }

    static func decode(_ row: PostgresRow) throws -> Destination {
        Destination(id: try row.decode(Int.self, "id"), name: try row.decode(String.self, "name"),
                    kind: try row.decode(String.self, "kind"), baseURL: try row.decode(String.self, "base_url"),
                    tokenEnv: try row.decode(String.self, "token_env"), rate: try row.decode(Double.self, "rate"),
                    concurrency: try row.decode(Int.self, "concurrency"), maxAttempts: try row.decode(Int.self, "max_attempts"),
                    maxExitRatio: try row.decode(Double.self, "max_exit_ratio"),
                    allowEmailID: try row.decode(Bool.self, "allow_email_id"), enabled: try row.decode(Bool.self, "enabled"))
    }
}
