import PostgresClient

/// One numbered migration from `sql/`: applied once, in order.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String
}

/// A view or function of the read side, from `sql/views/`: its one definition, created after the
/// numbered migrations and created again whenever its text changes. The file name's prefix
/// orders creation (a view before the views and functions that read it).
public struct ReadSideObject: Sendable, Equatable {
    /// The file name without `.sql`, e.g. `20_sync_status`.
    public let file: String
    public let sql: String

    /// The object's name in schema `engage`: the file name after its order prefix.
    public var name: String { String(file.drop { $0 != "_" }.dropFirst()) }
    var isView: Bool { sql.contains("CREATE VIEW engage.\(name) ") }
}

/// Applies the embedded migrations that are not yet applied.
public enum Migrations {
    /// What ``migrate(_:)`` did.
    public struct Report: Sendable {
        /// Names of the numbered migrations applied by this call, in order.
        public var applied: [String]
        /// Views and functions whose definition was new or changed, so this call created them again.
        public var readSide: [String]
        /// The schema version after the call.
        public var version: Int
    }

    /// Every numbered migration this binary carries.
    public static var all: [Migration] { embedded }
    /// Every view and function this binary carries, in creation order.
    public static var readSide: [ReadSideObject] { embeddedReadSide }

    /// Creates or upgrades schema `engage`. Idempotent, and safe from several processes at once:
    /// a session-level advisory lock serialises concurrent callers. When a numbered migration is
    /// pending or a view's or function's text changed, one transaction drops the read side
    /// (dependents first, so a migration may alter what a view reads), applies the pending
    /// migrations with their rows in `engage.schema_migrations`, and creates the read side again
    /// with its checksums in `engage.schema_read_side`.
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
            CREATE TABLE IF NOT EXISTS engage.schema_read_side (
                name       text PRIMARY KEY,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            RESET client_min_messages;
            """)
        let done = Set(try await db.query("SELECT version FROM engage.schema_migrations")
            .map { try $0.decode(Int.self, "version") })
        let pending = all.filter { !done.contains($0.version) }
        let changed = try await db.query("""
            SELECT o.name FROM unnest(\(readSide.map(\.name))::text[], \(readSide.map(\.sql))::text[]) WITH ORDINALITY AS o(name, sql, n)
            LEFT JOIN engage.schema_read_side r ON r.name = o.name
            WHERE r.checksum IS DISTINCT FROM md5(o.sql)
            ORDER BY o.n
            """).map { try $0.decode(String.self, "name") }
        let version = all.map(\.version).max() ?? 0
        guard !pending.isEmpty || !changed.isEmpty else { return Report(applied: [], readSide: [], version: version) }
        try await db.withTransaction { tx in
            for object in readSide.reversed() {
                try await tx.execute(PostgresQuery(unsafeSQL: "DROP \(object.isView ? "VIEW" : "FUNCTION") IF EXISTS engage.\(object.name)"))
            }
            for migration in pending {
                try await tx.execute(PostgresQuery(unsafeSQL: migration.sql))
                try await tx.query("INSERT INTO engage.schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))")
            }
            for object in readSide {
                try await tx.execute(PostgresQuery(unsafeSQL: object.sql))
                try await tx.query("""
                    INSERT INTO engage.schema_read_side (name, checksum) VALUES (\(object.name), md5(\(object.sql)))
                    ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()
                    """)
            }
        }
        return Report(applied: pending.map(\.name), readSide: changed, version: version)
    }
}
