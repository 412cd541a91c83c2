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
