import EngageCore
import Foundation
import PostgresClient

/// What `preview` shows: the size of an audience (or how many profiles have a trait value),
/// the most common values of a trait, and a sample. Writes nothing.
public struct PreviewResult: Sendable {
    public struct Sample: Sendable {
        public var profileID: String
        public var userID: String?
        public var email: String?
        /// The value as JSON text (`true` for audience members).
        public var value: String
    }

    public var total: Int
    public var sample: [Sample]
    /// Traits: the ten most common values (JSON text) and how many profiles have each.
    public var distribution: [(value: String, profiles: Int)]
}

extension DefinitionRepository {
    /// Evaluates `definition` once (one statement) and summarises the result.
    public func preview(_ definition: Definition, limit: Int, now: Date = Date()) async throws -> PreviewResult {
        let compiled = try DefinitionCompiler(audiences: try await audiences()).compile(definition, now: now)
        let rows = try await db.query("""
            WITH q AS MATERIALIZED (
            \(compiled)
            )
            SELECT (SELECT count(*) FROM q) AS total,
                   (SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]') FROM (
                        SELECT profile_id, user_id, email, to_jsonb(value)::text AS value
                        FROM q ORDER BY profile_id LIMIT \(limit)) s) AS sample,
                   (SELECT coalesce(jsonb_agg(to_jsonb(d)), '[]') FROM (
                        SELECT to_jsonb(value)::text AS value, count(*) AS profiles FROM q
                        GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10) d) AS distribution
            """)
        guard let row = rows.first else { return PreviewResult(total: 0, sample: [], distribution: []) }
        struct SampleRow: Decodable { var profile_id: String; var user_id: String?; var email: String?; var value: String }
        struct DistributionRow: Decodable { var value: String; var profiles: Int }
        let sample = try row.decodeJSON([SampleRow].self, "sample").map {
            PreviewResult.Sample(profileID: $0.profile_id, userID: $0.user_id, email: $0.email, value: $0.value)
        }
        let distribution = try row.decodeJSON([DistributionRow].self, "distribution").map { ($0.value, $0.profiles) }
        return PreviewResult(total: try row.decode(Int.self, "total"), sample: sample,
                             distribution: definition.kind == .trait ? distribution : [])
    }

    /// Runs the compiled query of `definition` and returns `profile_id → value` (JSON text).
    /// For tests and small audiences only: it holds the result in memory.
    public func evaluate(_ definition: Definition, now: Date) async throws -> [String: String] {
        let compiled = try DefinitionCompiler(audiences: try await audiences()).compile(definition, now: now)
        let rows = try await db.query("SELECT profile_id, to_jsonb(value)::text AS value FROM (\(compiled)) q")
        var result: [String: String] = [:]
        for row in rows { result[try row.decode(String.self, "profile_id")] = try row.decode(String.self, "value") }
        return result
    }
}

extension DefinitionRepository {
    /// The compiled query as `PREPARE engage_preview AS …; EXECUTE engage_preview(…);`, for
    /// reading, `EXPLAIN ANALYZE EXECUTE …` and benchmarks. Parameters become quoted literals.
    public func psqlScript(_ definition: Definition, now: Date) async throws -> String {
        if let query = definition.sqlQuery { return query.body + ";" }
        let compiled = try DefinitionCompiler(audiences: try await audiences()).compile(definition, now: now)
        let literals = compiled.binds.map { bind -> String in
            guard let text = bind.text else { return "NULL" }
            return "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
        }
        return """
            PREPARE engage_preview(\(compiled.binds.map(\.type.name).joined(separator: ", "))) AS
            \(compiled.sql);
            EXECUTE engage_preview(\(literals.joined(separator: ", ")));
            """
    }
}

/// What `preview` shows of a SQL definition: how many rows its query returns and how many of
/// their identifiers name a known profile. Runs the query read-only; writes nothing.
public struct SQLPreview: Sendable {
    public struct Sample: Sendable {
        public var id: String?
        public var email: String?
        /// The value as JSON text (nil for an audience).
        public var value: String?
        /// Whether a profile has this identifier.
        public var known: Bool
    }

    /// The identifier column: `user_id`, `profile_id` or `email`.
    public var identifier: String
    public var rows: Int
    /// Rows whose identifier a profile has.
    public var known: Int
    /// Rows whose identifier is NULL (a run would fail on them).
    public var nullIdentifiers: Int
    public var sample: [Sample]
}

extension DefinitionRepository {
    /// Runs a SQL definition's query read-only, as a run would (as the login `ENGAGE_SQL_ROLE`
    /// names, when set), copies its rows into a temporary table of a transaction it rolls
    /// back, and summarises them against the profiles.
    public func previewSQL(_ definition: Definition, limit: Int) async throws -> SQLPreview {
        guard let query = definition.sqlQuery else {
            throw SQLDefinitionError(key: definition.key, reason: "is not a SQL definition")
        }
        let source = sqlSource
        return try await db.withTransaction { tx in
            let shape = try await source.copy(query, kind: definition.kind, key: definition.key, pool: nil, into: db)
            let column = shape.identifier.rawValue
            let row = try await db.query("""
                WITH k AS (SELECT q.*, EXISTS (SELECT 1 FROM engage.profiles p WHERE p.\(unescaped: column) = q.id) AS known
                           FROM \(ScratchTable.sqlRows) q)
                SELECT count(*)::int AS total, count(*) FILTER (WHERE known)::int AS known,
                       count(*) FILTER (WHERE id IS NULL)::int AS nulls,
                       (SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]') FROM (
                            SELECT id, email, value::text AS value, known FROM k ORDER BY id LIMIT \(limit)) s) AS sample
                FROM k
                """).first
            tx.rollback()
            struct SampleRow: Decodable { var id: String?; var email: String?; var value: String?; var known: Bool }
            let sample = try row?.decodeJSON([SampleRow].self, "sample").map {
                SQLPreview.Sample(id: $0.id, email: $0.email, value: $0.value, known: $0.known)
            } ?? []
            return SQLPreview(identifier: column, rows: try row?.decode(Int.self, "total") ?? 0,
                              known: try row?.decode(Int.self, "known") ?? 0, nullIdentifiers: try row?.decode(Int.self, "nulls") ?? 0,
                              sample: sample)
        }
    }
}
