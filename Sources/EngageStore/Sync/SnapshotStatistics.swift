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

    /// `ANALYZE engage.memberships`: a sample of 30,000 rows (`default_statistics_target` 100)
    /// whatever the table's size. Run once, after the run's pairs are planned, not in a pair's
    /// transaction (it would hold the table's analyze lock until the pair commits).
    public static func refresh(_ db: PostgresConnection) async throws {
        try await db.execute("ANALYZE engage.memberships")
    }
}
