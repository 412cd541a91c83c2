import PostgresClient

/// A temporary table the sync pipeline passes from one statement, or stage, to the next: its
/// name and columns declared once (``ScratchTable/result`` and the others below), and every
/// statement that writes or reads it interpolates this declaration, never the name. Most live
/// until their transaction ends (`ON COMMIT DROP`), so a rolled-back run leaves nothing behind;
/// the few a whole run shares live in the session until dropped (``Lifetime/session``).
struct ScratchTable: Sendable, CustomStringConvertible {
    /// How long the table lives.
    enum Lifetime: Sendable {
        /// Until the transaction that created it ends.
        case transaction
        /// Until dropped (``drop(_:)``) or the session ends: what several transactions share.
        case session
    }

    /// A column: its name, its type and, for one a stage adds to a table it takes over, its default.
    struct Column: Sendable {
        var name: String
        var type: String
        var defaultValue: String?
    }

    /// The table's name (unique per session; no statement spells it).
    let name: String
    let columns: [Column]
    let lifetime: Lifetime

    init(_ name: String, _ columns: [(String, String)], added: [(String, String, String)] = [], lifetime: Lifetime = .transaction) {
        self.name = name
        self.lifetime = lifetime
        self.columns = columns.map { Column(name: $0.0, type: $0.1) }
            + added.map { Column(name: $0.0, type: $0.1, defaultValue: $0.2) }
    }

    var description: String { name }

    private var columnList: String { columns.map(\.name).joined(separator: ", ") }

    private var onCommit: String { lifetime == .transaction ? "ON COMMIT DROP" : "ON COMMIT PRESERVE ROWS" }

    /// Creates the table empty (replacing one an earlier stage of the transaction left).
    func create(_ db: PostgresConnection) async throws {
        let definitions = columns.map { "\($0.name) \($0.type)\($0.defaultValue.map { " NOT NULL DEFAULT \($0)" } ?? "")" }
        try await db.execute("""
            DROP TABLE IF EXISTS \(self);
            CREATE TEMP TABLE \(self) (\(unescaped: definitions.joined(separator: ", "))) \(unescaped: onCommit)
            """)
    }

    /// Creates the table holding the rows of `query`, whose columns are the declared ones in
    /// their order: each is cast to its declared type (a query that yields another shape fails
    /// here, by name). One `CREATE TABLE AS`: its rows are written in bulk.
    func create(as query: PostgresQuery, _ db: PostgresConnection) async throws {
        let projection = columns.map { "q.\($0.name)::\($0.type) AS \($0.name)" }.joined(separator: ", ")
        try await db.execute("DROP TABLE IF EXISTS \(self)")
        try await db.query("""
            CREATE TEMP TABLE \(self) \(unescaped: onCommit) AS
            SELECT \(unescaped: projection) FROM (
            \(query)
            ) AS q(\(unescaped: columnList))
            """)
    }

    /// Indexes `profile_id` (the key every stage joins on) and gathers statistics, so the
    /// statements that read the table plan for its real size.
    func indexAndAnalyze(on column: String = "profile_id", _ db: PostgresConnection) async throws {
        try await db.execute("CREATE INDEX ON \(self) (\(unescaped: column)); ANALYZE \(self)")
    }

    /// Drops the table if it exists (a session table, when what shared it is done).
    func drop(_ db: PostgresConnection) async throws {
        try await db.execute("DROP TABLE IF EXISTS \(self)")
    }

    /// Gathers statistics only.
    func analyze(_ db: PostgresConnection) async throws {
        try await db.execute("ANALYZE \(self)")
    }

    /// Becomes this table by taking over `other` (renamed, the columns this one adds to it
    /// added with their defaults) instead of copying its rows.
    func takeOver(_ other: ScratchTable, _ db: PostgresConnection) async throws {
        let added = columns.dropFirst(other.columns.count)
        precondition(zip(columns, other.columns).allSatisfy { $0.name == $1.name && $0.type == $1.type },
                     "\(name) takes over \(other.name) only when its columns begin with the other's")
        let add = added.map { ";\nALTER TABLE \(name) ADD COLUMN \($0.name) \($0.type) NOT NULL DEFAULT \($0.defaultValue ?? "NULL")" }
        try await db.execute("""
            DROP TABLE IF EXISTS \(self);
            ALTER TABLE \(other) RENAME TO \(self)\(unescaped: add.joined())
            """)
    }
}

extension PostgresQuery.StringInterpolation {
    /// A scratch table's name in a statement.
    mutating func appendInterpolation(_ table: ScratchTable) {
        appendInterpolation(unescaped: table.name)
    }
}

extension ScratchTable {
    // MARK: SQL definitions (``SQLSource``)

    /// A SQL definition's rows as its query returned them: identifier, email, value.
    static let sqlRows = ScratchTable("engage_sql_rows", [("id", "text"), ("email", "text"), ("value", "jsonb")])
    /// Those rows matched to profiles: what the compiled query of a SQL definition reads.
    static let sqlResult = ScratchTable("engage_sql_result", [
        ("id", "text"), ("given_email", "text"), ("value", "jsonb"), ("profile_id", "text"), ("user_id", "text"), ("email", "text"),
    ])

    // MARK: Evaluation (``Evaluator``)

    /// The profiles an incremental evaluation evaluates: those whose result can have changed.
    static let affected = ScratchTable("engage_affected", [("profile_id", "text")])
    /// The evaluation's rows: every profile's, or the affected profiles'.
    static let result = ScratchTable("engage_result", [("profile_id", "text"), ("value", "jsonb"), ("user_id", "text"), ("email", "text")])
    /// Snapshot rows that change: the new value (NULL: the profile leaves) and the one it replaces
    /// (NULL: the profile enters).
    static let snapshotChanges = ScratchTable("engage_changes", [("profile_id", "text"), ("value", "jsonb"), ("previous_value", "jsonb")])

    // MARK: What a run's due definitions share (``SharedChanges``)

    /// The profiles the change log lists for any of the due definitions, with the columns a
    /// compiled query reads of their rows (`present`: false for a profile deleted since).
    static let sharedProfiles = ScratchTable("engage_shared_profiles", [
        ("profile_id", "text"), ("user_id", "text"), ("email", "text"), ("traits", "jsonb"), ("present", "boolean"),
    ], lifetime: .session)
    /// Their events, copied once for every evaluation of the run: the columns a compiled query reads.
    static let sharedEvents = ScratchTable("engage_shared_events", [
        ("message_id", "text"), ("profile_id", "text"), ("event", "text"), ("properties", "jsonb"), ("occurred_at", "timestamptz"),
    ], lifetime: .session)
    /// The affected profiles of one evaluation that ``sharedProfiles`` does not hold (a window's
    /// edge crossed): their rows and events are read from `engage.profiles` and `engage.events`.
    static let unshared = ScratchTable("engage_unshared", [("profile_id", "text")])

    // MARK: Diff, enqueue and backlog expansion (``DiffEngine``)

    /// The profiles a scoped diff covers.
    static let candidates = ScratchTable("engage_candidates", [("profile_id", "text")])
    /// The rows the destination should hold for the profiles in scope; `deferred`: a member an
    /// open backlog has not reached (it owns its Vero id, the backlog enqueues it). Takes over
    /// ``result`` when that holds every profile.
    static let current = ScratchTable("engage_current", [("profile_id", "text"), ("value", "jsonb"), ("user_id", "text"), ("email", "text")],
                                      added: [("deferred", "boolean", "false")])
    /// Vero ids where a row that may have reached Vero, unconfirmed, carries another value than the ledger.
    static let unsettled = ScratchTable("engage_unsettled", [("vero_id", "text"), ("profile_id", "text"), ("email", "text")])
    /// One row per Vero id whose value may need telling, and per member Vero cannot address.
    static let desired = ScratchTable("engage_desired", [
        ("profile_id", "text"), ("vero_id", "text"), ("email", "text"), ("value", "jsonb"), ("ledger_value", "jsonb"),
        ("unsettled", "boolean"), ("member", "boolean"),
    ])
    /// The changes to insert into the outbox.
    static let enqueue = ScratchTable("engage_enqueue", [("profile_id", "text"), ("value", "jsonb"), ("email", "text"), ("vero_id", "text")])
}
