import PostgresClient

/// `engage.profile_changes`, the change log the triggers of migration 0008 write.
public struct ChangeLog: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Deletes the rows every active definition's last evaluation and every active pair's
    /// last diff could already see (below the oldest of their snapshots' xmin), and records
    /// that boundary: a definition or pair whose snapshot is older (disabled meanwhile, or
    /// evaluating while this ran) is evaluated or diffed in full next time instead of missing
    /// a change. Returns the number of rows deleted.
    @discardableResult
    public func prune() async throws -> Int {
        try await db.query("""
            WITH needed AS (
                SELECT pg_snapshot_xmin(e.seen) AS xmin FROM engage.evaluations e
                JOIN engage.computations c ON c.id = e.computation_id
                WHERE c.enabled AND c.removed_at IS NULL
                UNION ALL
                SELECT pg_snapshot_xmin(w.seen) FROM engage.pair_watermarks w
                JOIN engage.computations c ON c.id = w.computation_id
                JOIN engage.destinations d ON d.id = w.destination_id
                WHERE c.enabled AND c.removed_at IS NULL AND d.enabled),
            below AS (SELECT coalesce(min(xmin), pg_snapshot_xmin(pg_current_snapshot())) AS xid FROM needed),
            deleted AS (DELETE FROM engage.profile_changes WHERE xid < (SELECT xid FROM below) RETURNING 1),
            marked AS (
                INSERT INTO engage.settings (key, value)
                SELECT 'profile_changes_pruned_below', xid::text FROM below
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                WHERE engage.settings.value::xid8 < EXCLUDED.value::xid8
                RETURNING 1)
            SELECT (SELECT count(*) FROM deleted)::int AS n, (SELECT count(*) FROM marked) AS marked
            """).first?.decode(Int.self, "n") ?? 0
    }
}

extension ChangeLog {
    /// Why the change log cannot say everything that changed after `seen` (the snapshot an
    /// evaluation or a diff took), or nil when it can: a source table was truncated after it
    /// (only `engage.profiles` when `profilesOnly`), or rows it could not see were pruned.
    func gap(after seen: String, profilesOnly: Bool = false) async throws -> String? {
        let row = try await db.query("""
            SELECT EXISTS (SELECT 1 FROM engage.profile_changes c
                           WHERE c.profile_ids IS NULL AND (NOT \(profilesOnly) OR c.source = 'profiles')
                             AND \(Self.committed(after: seen, alias: "c"))) AS truncated,
                   pg_snapshot_xmin(\(seen)::pg_snapshot)
                       < coalesce((SELECT value FROM engage.settings WHERE key = 'profile_changes_pruned_below'), '0')::xid8
                       AS pruned
            """).first
        if try row?.decode(Bool.self, "truncated") == true { return "a source table was truncated" }
        if try row?.decode(Bool.self, "pruned") == true { return "the change log was pruned past the last evaluation" }
        return nil
    }

    /// What this transaction can see of the change log (its snapshot), taken before it reads
    /// anything: whatever it cannot see, the next evaluation or diff reads.
    func currentSnapshot() async throws -> String {
        try await db.query("SELECT pg_current_snapshot()::text AS seen").first?.decode(String.self, "seen") ?? ""
    }

    /// The planner's estimate of how many profiles there are, the measure a count of listed
    /// profiles is judged by.
    func estimatedProfiles() async throws -> Int {
        try await db.query("""
            SELECT greatest(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = 'engage.profiles'::regclass
            """).first?.decode(Int.self, "n") ?? 0
    }

    /// How many profile ids the change log lists after `seen` for an evaluation that reads
    /// `events`: an upper bound of what it would evaluate (a profile listed twice counts twice),
    /// read from the arrays' lengths without unnesting them.
    func listedCount(after seen: String, events: Set<String>) async throws -> Int {
        try await listedCount(where: """
            \(Self.committed(after: seen, alias: "c"))
              AND (c.source = 'profiles' OR c.events && \(events.sorted())::text[])
            """)
    }

    /// How many profile ids the change log lists after the last evaluation of any of
    /// `computationIDs` (an upper bound, as above).
    func listedCount(afterLastEvaluationOf computationIDs: [Int]) async throws -> Int {
        try await listedCount(where: Self.committedAfterLastEvaluation(of: computationIDs, alias: "c"))
    }

    private func listedCount(where condition: PostgresQuery) async throws -> Int {
        try await db.query("""
            SELECT coalesce(sum(cardinality(c.profile_ids)), 0)::bigint AS n
            FROM engage.profile_changes c WHERE \(condition)
            """).first?.decode(Int.self, "n") ?? 0
    }

    /// A query of the distinct `profile_id`s the change log lists after the last evaluation of
    /// any of `computationIDs`, whatever changed.
    static func listedProfiles(afterLastEvaluationOf computationIDs: [Int]) -> PostgresQuery {
        """
        SELECT DISTINCT u.profile_id
        FROM engage.profile_changes c CROSS JOIN LATERAL unnest(c.profile_ids) AS u(profile_id)
        WHERE \(committedAfterLastEvaluation(of: computationIDs, alias: "c"))
        """
    }

    /// A query of the `profile_id`s the change log lists after `seen`: every profile whose row
    /// changed, and those with a new or changed event among `events`.
    static func changedProfiles(after seen: String, events: Set<String>) -> PostgresQuery {
        let listed: PostgresQuery = events.isEmpty
            ? "c.source = 'profiles'"
            : "(c.source = 'profiles' OR u.event = ANY(\(events.sorted())::text[]))"
        return """
            SELECT u.profile_id
            FROM engage.profile_changes c
            CROSS JOIN LATERAL unnest(c.profile_ids, c.events) AS u(profile_id, event)
            WHERE \(committed(after: seen, alias: "c")) AND \(listed)
            """
    }

    /// A query of the `profile_id`s whose Vero identity changed after `seen` (what a pair's
    /// diff must address again): a new or deleted profile row, a changed user id or email.
    /// An update of other columns (traits) is not listed (`identity_ids`, migration 0017).
    static func readdressedProfiles(after seen: String) -> PostgresQuery {
        """
        SELECT unnest(coalesce(c.identity_ids, c.profile_ids)) FROM engage.profile_changes c
        WHERE \(committed(after: seen, alias: "c")) AND c.source = 'profiles'
        """
    }

    /// A change row (aliased `alias`) committed after the snapshot `seen`: one it could not see.
    private static func committed(after seen: String, alias: String) -> PostgresQuery {
        committed(afterSnapshot: "\(seen)::pg_snapshot", alias: alias)
    }

    /// A change row (aliased `alias`) that the last evaluation of one of `computationIDs`
    /// could not see.
    private static func committedAfterLastEvaluation(of computationIDs: [Int], alias: String) -> PostgresQuery {
        """
        EXISTS (SELECT 1 FROM engage.evaluations e
                WHERE e.computation_id IN (\(unescaped: computationIDs.map(String.init).joined(separator: ", ")))
                  AND \(committed(afterSnapshot: "e.seen", alias: alias)))
        """
    }

    /// A change row (aliased `alias`) committed after `snapshot` (an expression of type
    /// `pg_snapshot`).
    private static func committed(afterSnapshot snapshot: PostgresQuery, alias: String) -> PostgresQuery {
        """
        \(unescaped: alias).xid >= pg_snapshot_xmin(\(snapshot))
          AND NOT pg_visible_in_snapshot(\(unescaped: alias).xid, \(snapshot))
        """
    }
}
