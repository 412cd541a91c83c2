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

/// Reads and writes `engage.destinations`.
public struct DestinationRepository: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    static let columns = "id, name, kind, base_url, token_env, rate, concurrency, max_attempts, max_exit_ratio, allow_email_id, enabled"

    /// Adds a destination, or updates the settings given for an existing one of that name.
    @discardableResult
    public func upsert(name: String, kind: DestinationKind = .vero, settings: DestinationSettings) async throws -> Destination {
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
                allow_email_id = coalesce(\(settings.allowEmailID), d.allow_email_id)
            RETURNING \(unescaped: Self.columns)
            """)
        guard let row = rows.first else { throw UnknownDestination(name: name) }
        return try Self.decode(row)
    }

    public func all() async throws -> [Destination] {
        try await db.query("SELECT \(unescaped: Self.columns) FROM engage.destinations ORDER BY name").map(Self.decode)
    }

    public func find(name: String) async throws -> Destination {
        guard let row = try await db.query("SELECT \(unescaped: Self.columns) FROM engage.destinations WHERE name = \(name)").first else {
            throw UnknownDestination(name: name)
        }
        return try Self.decode(row)
    }

    static func decode(_ row: PostgresRow) throws -> Destination {
        Destination(id: try row.decode(Int.self, "id"), name: try row.decode(String.self, "name"),
                    kind: try row.decode(DestinationKind.self, "kind"), baseURL: try row.decode(String.self, "base_url"),
                    tokenEnv: try row.decode(String.self, "token_env"), rate: try row.decode(Double.self, "rate"),
                    concurrency: try row.decode(Int.self, "concurrency"), maxAttempts: try row.decode(Int.self, "max_attempts"),
                    maxExitRatio: try row.decode(Double.self, "max_exit_ratio"),
                    allowEmailID: try row.decode(Bool.self, "allow_email_id"), enabled: try row.decode(Bool.self, "enabled"))
    }
}
