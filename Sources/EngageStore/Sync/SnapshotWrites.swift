import EngageCore
import Foundation
import PostgresClient

/// How an evaluation writes the snapshot and its history (docs/architecture.md, "The snapshot
/// and its history"): values that change, values superseded, and the clock moving back.
extension Evaluator {
    /// What ``apply(_:scope:_:)`` changed: rows, and of them profiles that came in and went out.
    struct Applied {
        var changed = 0
        var added = 0
        var removed = 0
    }

    /// Brings the snapshot's rows (those of the profiles in `scope`, or all) to the evaluation's
    /// `result`: a superseded value moves to the history (unless it held for no time: set and
    /// replaced at the same instant), the new values enter the snapshot with this run's
    /// `since`, and the profiles changed are listed for the pairs' diffs.
    func apply(_ result: ScratchTable, scope: ScratchTable?, _ db: PostgresConnection) async throws -> Applied {
        let restrict: PostgresQuery = scope.map { " AND profile_id IN (SELECT profile_id FROM \($0))" } ?? ""
        let changes = ScratchTable.snapshotChanges
        try await changes.create(as: """
            SELECT coalesce(r.profile_id, m.profile_id), r.value, m.value
            FROM \(result) r
            FULL JOIN (SELECT profile_id, \(unescaped: definition.snapshotValue("memberships")) AS value FROM engage.memberships
                       WHERE computation_id = \(computationID)\(restrict)) m ON m.profile_id = r.profile_id
            WHERE r.value IS DISTINCT FROM m.value
            """, db)
        let row = try await db.query("""
            WITH changes AS (
                SELECT count(*)::int AS changed, count(*) FILTER (WHERE previous_value IS NULL)::int AS added,
                       count(*) FILTER (WHERE value IS NULL)::int AS removed, array_agg(profile_id) AS profile_ids
                FROM \(changes)),
            listed AS (
                INSERT INTO engage.snapshot_changes (computation_id, run_id, profile_ids)
                SELECT \(computationID), \(runID), profile_ids FROM changes WHERE changed > 0)
            SELECT changed, added, removed FROM changes
            """).first
        let applied = Applied(changed: try row?.decode(Int.self, "changed") ?? 0, added: try row?.decode(Int.self, "added") ?? 0,
                              removed: try row?.decode(Int.self, "removed") ?? 0)
        guard applied.changed > 0 else { return applied }
        try await db.query("""
            WITH superseded AS (
                DELETE FROM engage.memberships m USING \(changes) c
                WHERE m.computation_id = \(computationID) AND m.profile_id = c.profile_id AND c.previous_value IS NOT NULL
                RETURNING m.profile_id, m.value, m.since, m.since_run)
            INSERT INTO engage.membership_history (computation_id, profile_id, value, since, until, since_run, until_run)
            SELECT \(computationID), profile_id, value, since, \(now), since_run, \(runID) FROM superseded
            WHERE since < \(now)::timestamptz
            """)
        try await db.query("""
            INSERT INTO engage.memberships (computation_id, profile_id, value, since, since_run)
            SELECT \(computationID), profile_id, value, \(now), \(runID) FROM \(changes) WHERE value IS NOT NULL
            """)
        // Open backlogs of this definition have the entries past their cursor still to reach,
        // and no longer the exits.
        try await db.query("""
            UPDATE engage.backlogs b SET remaining = b.remaining + moved.n
            FROM (SELECT b2.destination_id,
                         count(*) FILTER (WHERE c.previous_value IS NULL) - count(*) FILTER (WHERE c.value IS NULL) AS n
                  FROM engage.backlogs b2 JOIN \(changes) c ON c.profile_id > coalesce(b2.after_profile, '')
                  WHERE b2.computation_id = \(computationID)
                  GROUP BY 1) moved
            WHERE b.computation_id = \(computationID) AND b.destination_id = moved.destination_id AND moved.n <> 0
            """)
        return applied
    }

    /// When the clock moved back to `now`, behind the last evaluation (`state`): this run's result
    /// holds from `now` on, over what runs at later instants decided. Values that took effect
    /// after `now` are cut out of the history, values that held across it end at it, and
    /// snapshot rows that took effect after it hold from it (this run decides them). Then
    /// "value at instant t" reads what the latest run deciding t decided.
    func rewind(after state: State?, _ db: PostgresConnection) async throws {
        guard let state, now < state.evaluatedAt else { return }
        try await db.query("""
            DELETE FROM engage.membership_history WHERE computation_id = \(computationID) AND since >= \(now)::timestamptz
            """)
        try await db.query("""
            UPDATE engage.membership_history SET until = \(now), until_run = \(runID)
            WHERE computation_id = \(computationID) AND until > \(now)::timestamptz
            """)
        try await db.query("""
            UPDATE engage.memberships SET since = \(now), since_run = \(runID)
            WHERE computation_id = \(computationID) AND since > \(now)::timestamptz
            """)
    }

    func saveState(seen: String, full: Bool, members: Int, _ db: PostgresConnection) async throws {
        try await db.query("""
            INSERT INTO engage.evaluations (computation_id, evaluated_at, seen, definition, full_at, members)
            VALUES (\(computationID), \(now), \(seen)::pg_snapshot, \(PostgresJSON(rawJSON: evaluatedDocument.jsonString))::jsonb, \(now),
                    \(members))
            ON CONFLICT (computation_id) DO UPDATE SET
                evaluated_at = EXCLUDED.evaluated_at, seen = EXCLUDED.seen, definition = EXCLUDED.definition,
                members = EXCLUDED.members,
                full_at = CASE WHEN \(full) THEN EXCLUDED.full_at ELSE engage.evaluations.full_at END
            """)
    }
}


extension Definition {
    /// A snapshot row's value, for `engage.memberships` aliased `alias`. Every row of an
    /// audience's snapshot holds true, so its primary key has all that is read (an index-only
    /// scan, where the heap page of each profile's row was read otherwise).
    func snapshotValue(_ alias: String) -> String {
        kind == .audience ? "'true'::jsonb" : "\(alias).value"
    }
}
