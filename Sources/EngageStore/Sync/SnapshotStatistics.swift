import PostgresClient

/// Keeps the planner's statistics of the snapshot (`engage.memberships`) knowing every
/// definition whose rows it holds.
///
/// Autovacuum analyzes a table once a tenth of it has changed. A definition's snapshot is one
/// slice of that table: a new or redefined definition can add less than a tenth, and then the
/// statistics never learn its `computation_id`. For an id it has not seen the planner estimates
/// one row, and plans the next incremental run's snapshot comparison (the definition's rows
/// against the changed profiles) row by row against the whole list: quadratic, seconds to
/// minutes where milliseconds were expected (issue 28's profile at 1M).
public enum SnapshotStatistics {
    /// Whether `evaluation` filled its snapshot in a way the statistics cannot know: a full
    /// evaluation that changed at least a tenth of the rows it leaves (a first sync, a resync, a
    /// redefinition). A daily reconciliation that changed a few rows does not.
    public static func outdated(by evaluation: EvaluationOutcome) -> Bool {
        evaluation.kind == .full && evaluation.changed > 0 && evaluation.changed * 10 >= evaluation.members
    }

    /// Analyzes `computation_id` alone, from a sample of 3,000 rows (`default_statistics_target`
    /// 10, for this statement): enough to know each definition holding a sizable share of the
    /// table (up to ten by name, the others by their average), which is what the plans need.
    /// The whole table at the default target samples 30,000 rows: 130 ms of a 0.8 s first sync
    /// at 200k profiles, against 12–16 ms (docs/performance.md). Autovacuum's next analysis
    /// brings back the full statistics. Run once, after the run's pairs are planned, in a
    /// transaction of its own (in a pair's, it would hold the table's analyze lock until the
    /// pair commits).
    public static func refresh(_ db: PostgresConnection) async throws {
        try await db.withTransaction { _ in
            try await db.execute("SET LOCAL default_statistics_target = 10; ANALYZE engage.memberships (computation_id)")
        }
    }
}
