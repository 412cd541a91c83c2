import EngageCore
import Foundation
import PostgresClient

/// A SQL definition's query could not be used: it failed, timed out, was refused, or returned
/// rows that break the column contract
/// (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables). Fails that pair only.
public struct SQLDefinitionError: Error, Sendable, CustomStringConvertible {
    /// The definition's key.
    public var key: String
    public var reason: String
    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }
    public var description: String { "SQL definition \(key): \(reason)" }
}

/// The columns a SQL definition's query returns, checked against the contract: exactly one
/// identifier (`user_id`, `profile_id` or `email`), `value` for a trait, and an optional
/// `email` beside `user_id`; nothing else.
public struct SQLShape: Sendable, Hashable {
    /// What identifies a row's profile.
    public enum Identifier: String, Sendable, CaseIterable {
        case userID = "user_id", profileID = "profile_id", email
    }

    public var identifier: Identifier
    /// An `email` column beside `user_id`, which fills the profile's email.
    public var email: Bool
    /// A trait's `value` column.
    public var value: Bool

    /// Text types by `pg_type` OID: text, varchar, char, name.
    static let textTypes: Set<UInt32> = [25, 1043, 1042, 19]
    /// The column types an identifier may have: text, the integers (int2, int4, int8), uuid.
    static let identifierTypes: Set<UInt32> = textTypes.union([21, 23, 20, 2950])

    /// The shape of `columns` (name and `pg_type` OID, in order) for a definition of `kind`,
    /// or every problem with them.
    static func check(_ columns: [(name: String, type: UInt32)], kind: Definition.Kind,
                      typeName: (UInt32) -> String) -> Result<SQLShape, SQLShapeProblems> {
        var problems: [String] = []
        var seen: Set<String> = []
        for (name, _) in columns where !seen.insert(name).inserted {
            problems.append("the column \(name.debugDescription) appears twice")
        }
        let names = Set(columns.map(\.name))
        var identifier: Identifier?
        if names.contains("user_id") {
            identifier = .userID
            if names.contains("profile_id") {
                problems.append("returns both user_id and profile_id; return exactly one identifier column")
            }
        } else if names.contains("profile_id") {
            identifier = .profileID
            if names.contains("email") {
                problems.append("returns email beside profile_id; an email column is allowed only beside user_id (or alone, as the identifier)")
            }
        } else if names.contains("email") {
            identifier = .email
        } else {
            problems.append("has no identifier column: return one of user_id, profile_id or email (e.g. `SELECT id::text AS user_id …`)")
        }
        let allowed: Set<String> = kind == .trait ? ["user_id", "profile_id", "email", "value"] : ["user_id", "profile_id", "email"]
        for (name, _) in columns where !allowed.contains(name) {
            if name == "value" {
                problems.append("returns a value column, which an audience does not use (its rows are its members); remove it, or make the definition a trait")
            } else {
                problems.append("returns the column \(name.debugDescription), which would be ignored; a SQL \(kind.rawValue) returns \(kind == .trait ? "one identifier column (user_id, profile_id or email), value, and optionally email beside user_id" : "one identifier column (user_id, profile_id or email), and optionally email beside user_id")")
            }
        }
        if kind == .trait, !names.contains("value") {
            problems.append("has no value column: a SQL trait returns each profile's value as `value`")
        }
        for (name, type) in columns {
            if name == "email", !textTypes.contains(type) {
                problems.append("the column email is of type \(typeName(type)); it must be text (cast it: `… ::text AS email`)")
            } else if name == "user_id" || name == "profile_id", !identifierTypes.contains(type) {
                problems.append("the column \(name) is of type \(typeName(type)); an identifier must be text, an integer or a uuid (cast it: `… ::text AS \(name)`)")
            }
        }
        guard problems.isEmpty, let identifier else { return .failure(SQLShapeProblems(reasons: problems)) }
        return .success(SQLShape(identifier: identifier, email: identifier == .userID && names.contains("email"),
                                 value: kind == .trait))
    }

    /// The query's rows as `(id text, email text, value jsonb)`, the form they are copied in.
    func projection(of body: String) -> PostgresQuery {
        let email = self.email ? "q.email::text" : "NULL::text"
        let value = self.value ? "to_jsonb(q.value)" : "NULL::jsonb"
        return """
            SELECT q.\(unescaped: identifier.rawValue)::text AS id, \(unescaped: email) AS email, \(unescaped: value) AS value FROM (
            \(unescaped: body)
            ) q
            """
    }
}

/// What is wrong with a query's columns.
struct SQLShapeProblems: Error {
    var reasons: [String]
}

/// Runs the user's query of a SQL definition safely: in a READ ONLY transaction of its own on
/// a connection of its own, with `statement_timeout` from the definition. When `ENGAGE_SQL_ROLE`
/// names a login, that connection logs in as it (same server and database as the engine), so
/// the session user is that login: no `set_config('role', …)`, `RESET ROLE` or `SET SESSION
/// AUTHORIZATION` in a query reaches the engine's rights. The query is wrapped as a subquery and
/// sent with the extended protocol, so it is one SELECT: no second statement, no data-modifying
/// `WITH`, no `COMMIT` in the middle.
public struct SQLSource: Sendable {
    /// The login queries run as, or nil for the engine's own.
    public var login: PostgresLogin?
    /// The engine's connection string, whose server and database the login connects to.
    public var conninfo: String?

    /// The login's name, for messages.
    public var role: String? { login?.user }

    /// `ENGAGE_SQL_ROLE` names the login (unset or empty: none); its password is
    /// `ENGAGE_SQL_PASSWORD`, else what libpq finds for it (`~/.pgpass`, `PGPASSFILE`).
    /// `conninfo` is the engine's (default: `DATABASE_URL`).
    public init(conninfo: String? = ProcessInfo.processInfo.environment["DATABASE_URL"],
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.conninfo = conninfo
        login = environment["ENGAGE_SQL_ROLE"].flatMap { name in
            name.isEmpty ? nil : PostgresLogin(user: name, password: environment["ENGAGE_SQL_PASSWORD"].map(PostgresPassword.init))
        }
    }

    /// Runs `body` on a connection a query may run on: one of its own logged in as ``login``;
    /// without one, `fallback`, else one of `pool`, else a new one (the engine's rights).
    func withReader<T: Sendable>(key: String, pool: PostgresConnectionPool? = nil, fallback: PostgresConnection? = nil,
                                 _ body: (PostgresConnection) async throws -> T) async throws -> T {
        guard let login else {
            if let fallback { return try await body(fallback) }
            if let pool { return try await pool.withConnection(body) }
            return try await PostgresConnection.withConnection(conninfo, body)
        }
        var connected = false
        do {
            return try await PostgresConnection.withConnection(conninfo, login: login) { reader in
                connected = true
                return try await body(reader)
            }
        } catch let error as PostgresError where error.kind == .connection && !connected {
            throw SQLDefinitionError(key: key, reason: "cannot log in as \(login.user) (ENGAGE_SQL_ROLE; it must be a role WITH LOGIN): \(error.message)")
        }
    }

    /// Who a query runs as, and whether that role is a superuser (or may bypass row security):
    /// `define` and `status` warn when SQL definitions would run with such rights.
    public func runsAs(fallback: PostgresConnection) async throws -> (user: String, superuser: Bool) {
        try await withReader(key: "", fallback: fallback) { db in
            let row = try await db.query("""
                SELECT session_user::text AS name, rolsuper OR rolbypassrls AS super FROM pg_roles WHERE rolname = session_user
                """).first
            return (try row?.decode(String.self, "name") ?? "?", try row?.decode(Bool.self, "super") ?? false)
        }
    }

    /// The statement that reads the query's columns without running it for rows.
    static let describePrefix = "SELECT * FROM (\n"

    /// Runs `body` in a READ ONLY transaction on `db` (a reader, see
    /// ``withReader(key:pool:fallback:_:)``) with the query's time limit, and rolls it back.
    func readOnly<T: Sendable>(_ query: SQLQuery, on db: PostgresConnection,
                               _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await db.withTransaction { tx in
            try await db.execute("SET TRANSACTION READ ONLY")
            try await db.query("SELECT set_config('statement_timeout', \(String(query.timeoutSeconds * 1000)), true)")
            let value = try await body(db)
            tx.rollback()
            return value
        }
    }

    /// The query's columns and their shape; throws ``SQLDefinitionError`` (with PostgreSQL's
    /// message and the position in the query) when it does not plan, or when its columns break
    /// the contract. Call inside ``readOnly(_:on:_:)``.
    func shape(_ query: SQLQuery, kind: Definition.Kind, key: String, on db: PostgresConnection) async throws -> SQLShape {
        let rows: PostgresRows
        do {
            rows = try await db.query("\(unescaped: Self.describePrefix)\(unescaped: query.body)\n) q LIMIT 0")
        } catch let error as PostgresError {
            throw SQLDefinitionError(key: key, reason: explain(error, in: query, prefix: Self.describePrefix))
        }
        let oids: [String] = Set(rows.columnTypes).map { String($0) }
        var names: [UInt32: String] = [:]
        let typeRows = try await db.query("""
            SELECT oid::int8 AS oid, format_type(oid, NULL) AS name FROM pg_type
            WHERE oid::text = ANY(\(oids)::text[])
            """)
        for row in typeRows {
            names[UInt32(try row.decode(Int.self, "oid"))] = try row.decode(String.self, "name")
        }
        let columns: [(name: String, type: UInt32)] = zip(rows.columns, rows.columnTypes).map { (name: $0, type: $1) }
        let typeName: (UInt32) -> String = { names[$0] ?? "oid \($0)" }
        switch SQLShape.check(columns, kind: kind, typeName: typeName) {
        case .success(let shape): return shape
        case .failure(let problems): throw SQLDefinitionError(key: key, reason: problems.reasons.joined(separator: "; "))
        }
    }

    /// PostgreSQL's message for an error in the user's query, with where in the query it is
    /// when the query was wrapped after `prefix`.
    func explain(_ error: PostgresError, in query: SQLQuery, prefix: String? = nil) -> String {
        var text = error.message
        switch error.sqlState {
        case PostgresError.SQLState.queryCanceled?:
            text = "the query ran longer than its timeout (\(query.timeoutSeconds) s) and was cancelled"
        case PostgresError.SQLState.readOnlySQLTransaction?:
            text += " (SQL definitions run read-only: a query must not write, lock rows or call functions that do)"
        case PostgresError.SQLState.insufficientPrivilege?:
            text += role.map { " (the query runs as the role \($0), from ENGAGE_SQL_ROLE)" } ?? " (the query runs as the engine's login)"
        default:
            break
        }
        if let position = error.position, let prefix {
            // Positions count characters of the wrapped statement; the query starts after the prefix.
            let offset = position - prefix.count
            let body = query.body
            if offset >= 1, offset <= body.count {
                let before = body.prefix(offset - 1)
                let line = before.filter { $0 == "\n" }.count + 1
                let column = before.count - (before.lastIndex(of: "\n").map { before.distance(from: before.startIndex, to: $0) + 1 } ?? 0) + 1
                text += " (at line \(line), column \(column) of the query)"
            }
        }
        if let detail = error.detail { text += "; detail: \(detail)" }
        if let hint = error.hint { text += "; hint: \(hint)" }
        return text
    }

    /// `define`'s check: the query plans and its columns keep the contract, as the login it will
    /// run as (`db` is used when there is none). Nil when it is usable, else why not.
    public func problem(with query: SQLQuery, kind: Definition.Kind, on db: PostgresConnection) async throws -> String? {
        do {
            _ = try await withReader(key: "", fallback: db) { reader in
                try await readOnly(query, on: reader) { reader in try await shape(query, kind: kind, key: "", on: reader) }
            }
            return nil
        } catch let error as SQLDefinitionError {
            return error.reason
        } catch let error as PostgresError where error.kind == .server {
            return explain(error, in: query)
        }
    }

    /// Streams the query's rows from a reader (a connection of `pool` when there is no login)
    /// into ``ScratchTable/sqlRows`` of `db` (the caller's
    /// transaction): COPY out, COPY in. Throws ``SQLDefinitionError`` for anything the query
    /// itself causes.
    func copy(_ query: SQLQuery, kind: Definition.Kind, key: String, pool: PostgresConnectionPool?,
              into db: PostgresConnection) async throws -> SQLShape {
        try await ScratchTable.sqlRows.create(db)
        /// An error of the run's own connection (`db`), carried out untouched: it stops the run,
        /// where the reader's connection lost fails this pair only.
        struct EngineSide: Error { var error: any Error }
        do {
            return try await withReader(key: key, pool: pool) { reader in
                try await readOnly(query, on: reader) { reader in
                    let shape = try await shape(query, kind: kind, key: key, on: reader)
                    do {
                        try await db.copyIn("COPY \(ScratchTable.sqlRows) FROM STDIN") { writer in
                            do {
                                try await reader.copyOut("COPY (\(shape.projection(of: query.body))) TO STDOUT") { chunk in
                                    do { try await writer.write(bytes: chunk) } catch { throw EngineSide(error: error) }
                                }
                            } catch let error as PostgresError where error.kind == .server {
                                throw SQLDefinitionError(key: key, reason: explain(error, in: query))
                            } catch let error as PostgresError where error.kind == .connection {
                                throw SQLDefinitionError(key: key, reason: "the query's connection was lost (\(error.message)); the next run tries again")
                            }
                        }
                    } catch let error as PostgresError where error.kind == .connection {
                        throw EngineSide(error: error)
                    }
                    return shape
                }
            }
        } catch let side as EngineSide {
            throw side.error
        } catch let error as PostgresError where error.kind == .connection {
            // The reader's connection (its transaction, its statement): this pair only.
            throw SQLDefinitionError(key: key, reason: "the query's connection was lost (\(error.message)); the next run tries again")
        }
    }
}

extension SQLSource {
    /// Checks the rows ``copy(_:kind:key:pool:into:)`` left, matches them to profiles and leaves
    /// ``ScratchTable/sqlResult``, what the compiled query of a SQL
    /// definition reads: one row per profile, a trait's SQL NULL (or JSON null) dropped as "no
    /// value". An unknown `user_id` creates a profile (`profile_id = user_id`, with the row's
    /// email), an unknown email an email-only one (`email:<address>`); a given email fills a
    /// known profile's missing one. Returns the profiles created.
    ///
    /// One pass finds a NULL or duplicated identifier, one join matches every row (the few
    /// created profiles are patched in after): at 1M rows each extra pass costs about 0.5 s.
    func resolve(_ shape: SQLShape, key: String, _ db: PostgresConnection) async throws -> Int {
        let column = shape.identifier.rawValue
        let limit = SegmentMessage.maxIdentifierBytes
        if let bad = try await db.query("""
            SELECT id, count(*)::int AS n, max(octet_length(email))::int AS email_bytes FROM \(ScratchTable.sqlRows) GROUP BY id
            HAVING count(*) > 1 OR id IS NULL OR id = '' OR octet_length(id) > \(limit) OR max(octet_length(email)) > \(limit)
            ORDER BY id NULLS FIRST LIMIT 1
            """).first {
            let n = try bad.decode(Int.self, "n")
            guard let id = try bad.decode(String?.self, "id") else {
                throw SQLDefinitionError(key: key, reason: "\(n) row\(n == 1 ? "" : "s") returned a NULL \(column); every row needs one (filter them out with `WHERE \(column) IS NOT NULL`)")
            }
            // An identifier is shown by its first 40 characters: a long one would fill the message.
            let shown = id.count > 40 ? "\(id.prefix(40).debugDescription)… (\(id.utf8.count) bytes)" : id.debugDescription
            if id.isEmpty {
                throw SQLDefinitionError(key: key, reason: "\(n) row\(n == 1 ? "" : "s") returned an empty \(column); every row needs one (filter them out with `WHERE \(column) <> ''`)")
            }
            if id.utf8.count > limit {
                throw SQLDefinitionError(key: key, reason: "the row with the \(column) \(shown) is over the \(limit)-byte limit of an identifier")
            }
            if let bytes = try bad.decode(Int?.self, "email_bytes"), bytes > limit {
                throw SQLDefinitionError(key: key, reason: "the row with the \(column) \(shown) has an email of \(bytes) bytes, over the \(limit)-byte limit of an identifier")
            }
            throw SQLDefinitionError(key: key, reason: "returned the \(column) \(shown) \(n) times; a SQL definition returns one row per \(column) (e.g. GROUP BY \(column) or DISTINCT ON (\(column)))")
        }
        let match: PostgresQuery
        switch shape.identifier {
        case .userID:
            match = "LEFT JOIN engage.profiles p ON p.user_id = r.id"
        case .profileID:
            match = "LEFT JOIN engage.profiles p ON p.profile_id = r.id"
        case .email:
            // Several profiles may share an email: the one with a user id (Vero can address it
            // by id), then the first by profile id.
            match = """
                LEFT JOIN LATERAL (SELECT * FROM engage.profiles p WHERE p.email = r.id
                                   ORDER BY p.user_id IS NULL, p.profile_id LIMIT 1) p ON true
                """
        }
        let keep: PostgresQuery = shape.value ? "WHERE r.value IS NOT NULL AND r.value <> 'null'::jsonb" : ""
        try await ScratchTable.sqlResult.create(as: """
            SELECT r.id, r.email AS given_email, r.value, p.profile_id, p.user_id, p.email
            FROM \(ScratchTable.sqlRows) r \(match) \(keep)
            """, db)
        let created: Int
        switch shape.identifier {
        case .userID, .email:
            let newProfile: PostgresQuery = shape.identifier == .userID
                ? "SELECT id, id, given_email FROM \(ScratchTable.sqlResult) WHERE profile_id IS NULL"
                : "SELECT 'email:' || id, NULL, id FROM \(ScratchTable.sqlResult) WHERE profile_id IS NULL"
            created = try await db.query("""
                WITH created AS (
                    INSERT INTO engage.profiles (profile_id, user_id, email)
                    \(newProfile)
                    ON CONFLICT DO NOTHING
                    RETURNING profile_id, user_id, email),
                matched AS (
                    UPDATE \(ScratchTable.sqlResult) r SET profile_id = c.profile_id, user_id = c.user_id, email = c.email
                    FROM created c
                    WHERE r.profile_id IS NULL AND r.id = \(unescaped: shape.identifier == .userID ? "c.user_id" : "c.email")
                    RETURNING 1)
                SELECT count(*)::int AS n FROM matched
                """).first?.decode(Int.self, "n") ?? 0
        case .profileID:
            created = 0
        }
        if shape.email {
            try await db.query("""
                WITH filled AS (
                    UPDATE engage.profiles p SET email = r.given_email, updated_at = now()
                    FROM \(ScratchTable.sqlResult) r
                    WHERE p.profile_id = r.profile_id AND p.email IS NULL AND r.given_email IS NOT NULL
                    RETURNING p.profile_id, p.email)
                UPDATE \(ScratchTable.sqlResult) r SET email = f.email FROM filled f WHERE r.profile_id = f.profile_id
                """)
        }
        return created
    }
}
