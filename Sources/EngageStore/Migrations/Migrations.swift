import PostgresClient

/// One numbered migration from `sql/`.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String
}

/// Applies the embedded migrations that are not yet applied.
public enum Migrations {
    /// What ``migrate(_:)`` did.
    public struct Report: Sendable {
        /// Names of the migrations applied by this call, in order.
        public var applied: [String]
        /// The schema version after the call.
        public var version: Int
    }

    /// Every migration this binary carries.
    public static var all: [Migration] { embedded }

    /// Creates or upgrades schema `engage`. Idempotent, and safe from several processes at once:
    /// a session-level advisory lock serialises concurrent callers, and each migration is applied
    /// in its own transaction together with its row in `engage.schema_migrations`.
    @discardableResult
    public static func migrate(_ db: PostgresConnection) async throws -> Report {
        try await db.query("SELECT pg_advisory_lock(hashtext('engage-sync:migrate'))")
        do {
            let report = try await applyPending(db)
            try await db.query("SELECT pg_advisory_unlock(hashtext('engage-sync:migrate'))")
            return report
        } catch {
            _ = try? await db.query("SELECT pg_advisory_unlock(hashtext('engage-sync:migrate'))")
            throw error
        }
    }

    private static func applyPending(_ db: PostgresConnection) async throws -> Report {
        try await db.execute("""
            SET client_min_messages = warning;
            CREATE SCHEMA IF NOT EXISTS engage;
            CREATE TABLE IF NOT EXISTS engage.schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            RESET client_min_messages;
            """)
        let done = Set(try await db.query("SELECT version FROM engage.schema_migrations")
            .map { try $0.decode(Int.self, "version") })
        var applied: [String] = []
        for migration in all where !done.contains(migration.version) {
            try await db.withTransaction { tx in
                try await tx.execute(PostgresQuery(unsafeSQL: migration.sql))
                try await tx.query("INSERT INTO engage.schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))")
            }
            applied.append(migration.name)
        }
        return Report(applied: applied, version: all.map(\.version).max() ?? 0)
    }
}
