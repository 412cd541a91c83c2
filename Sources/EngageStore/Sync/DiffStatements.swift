import EngageCore
import Foundation
import PostgresClient

/// The diff's statements, in the order a run takes them: the rows the destination should hold,
/// compared with the ledger, the guardrail, stale pending rows superseded, the changes enqueued.
extension DiffEngine {
    /// The rows the destination should hold, ``ScratchTable/current``: the snapshot's, for the
    /// profiles in `scope` (nil: every profile). The evaluation's `rows` already hold them for
    /// the profiles it evaluated (every profile, or the affected ones), so only the others are
    /// read from the snapshot. `deferred` marks the members an open backlog has not reached
    /// (profile id after `deferredAfter`): they own their Vero ids, but the backlog enqueues them.
    func currentRows(scope: ScratchTable?, rows: EvaluatedRows, deferredAfter: String?,
                     _ db: PostgresConnection) async throws -> ScratchTable {
        let current = ScratchTable.current
        if scope == nil, case .everyProfile(let result) = rows {
            try await current.takeOver(result, db)
            try await current.analyze(db)
            return current
        }
        let deferred: (String) -> PostgresQuery = { alias in
            deferredAfter.map { "\(unescaped: alias).profile_id > \($0)::text" } ?? "false"
        }
        let fromResult: (ScratchTable) -> PostgresQuery = { result in
            "SELECT r.profile_id, r.value, r.user_id, r.email, \(deferred("r")) FROM \(result) r"
        }
        let fromSnapshot: PostgresQuery = """
            SELECT m.profile_id, \(unescaped: definition.snapshotValue("m")), p.user_id, p.email, \(deferred("m"))
            FROM engage.memberships m JOIN engage.profiles p ON p.profile_id = m.profile_id
            WHERE m.computation_id = \(computationID)
            """
        let query: PostgresQuery
        switch (scope, rows) {
        case (let scope?, .everyProfile(let result)):
            query = "\(fromResult(result)) WHERE r.profile_id IN (SELECT profile_id FROM \(scope))"
        case (let scope?, .someProfiles(let result, let evaluated)):
            // The affected profiles' rows were just evaluated (the snapshot holds the same);
            // the others in scope (a change this pair has not diffed yet, a retry) are read.
            query = """
                \(fromResult(result)) WHERE r.profile_id IN (SELECT profile_id FROM \(scope))
                UNION ALL
                \(fromSnapshot)
                  AND m.profile_id IN (SELECT profile_id FROM \(scope)
                                       EXCEPT SELECT profile_id FROM \(evaluated))
                """
        case (let scope?, .snapshotOnly):
            query = "\(fromSnapshot) AND m.profile_id IN (SELECT profile_id FROM \(scope))"
        case (nil, _):
            query = fromSnapshot
        }
        try await current.create(as: query, db)
        try await current.indexAndAnalyze(db)
        return current
    }

    /// Compares `current` with the ledger into ``ScratchTable/desired``: one row per Vero id
    /// whose value may need telling (members with the ledger's value for their id, and the
    /// exits of ids no member owns), plus members Vero cannot address (`vero_id` NULL).
    ///
    /// `unsettled` marks ids where a row that may have reached Vero (attempted or leased, not
    /// confirmed, not refused with a 4xx) carries another value than the ledger: what Vero
    /// holds there is unknown, so the desired value is sent even when it equals the ledger's, and an id no member
    /// owns gets the exit value even without a ledger row. Without this, a request that timed
    /// out after Vero applied it, then superseded, would leave its value at Vero for ever.
    /// Without `exits`, only members are compared (a backlog's batch); without `count`, the
    /// run's counts are not taken.
    func compare(_ current: ScratchTable, _ mode: RunMode, scope: ScratchTable?, exits: Bool = true, count: Bool = true,
                 _ db: PostgresConnection, into outcome: inout DiffOutcome) async throws -> ScratchTable {
        // In a scoped diff, only the rows of the profiles in scope.
        let unsettledInScope: PostgresQuery = scope.map { " AND o.profile_id IN (SELECT profile_id FROM \($0))" } ?? ""
        let unsettled = ScratchTable.unsettled
        try await unsettled.create(as: """
            SELECT DISTINCT ON (o.vero_id) o.vero_id, o.profile_id, o.email
            FROM engage.outbox o
            WHERE \(pair("o")) AND o.status IN ('pending', 'failed')\(unsettledInScope)
              AND o.vero_id IS NOT NULL AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
              AND NOT (o.status = 'failed' AND o.last_status_code BETWEEN 400 AND 499) -- refused: not applied
              -- settled when the ledger has a later confirmation, or the same value
              AND NOT EXISTS (SELECT 1 FROM engage.ledger l
                              WHERE \(pair("l")) AND l.vero_id = o.vero_id
                                AND (o.id <= l.outbox_id OR o.value IS NOT DISTINCT FROM l.value))
            ORDER BY o.vero_id, o.id DESC
            """, db)
        // With email ids two profiles can share one (the same email); the profile whose user
        // id it is wins, then the lowest profile id. User ids are unique: nothing to choose.
        let owners: PostgresQuery = destination.allowEmailID
            ? "SELECT DISTINCT ON (vero_id) * FROM cur WHERE vero_id IS NOT NULL AND NOT deferred ORDER BY vero_id, user_id IS NULL, profile_id"
            : "SELECT * FROM cur WHERE vero_id IS NOT NULL AND NOT deferred"
        // In a scoped diff, the ids held for the profiles in scope (found through the ledger's
        // profile index, not by reading every id the pair holds). Ids a member owns need no
        // exit, so those held by other profiles need not be read.
        let heldInScope: PostgresQuery = scope.map { " AND l.profile_id IN (SELECT profile_id FROM \($0))" } ?? ""
        let desired = ScratchTable.desired
        try await desired.create(as: """
            WITH cur AS MATERIALIZED (
                SELECT c.profile_id, c.value, c.user_id, c.email, c.deferred, \(veroID("c")) AS vero_id FROM \(current) c),
            held AS (
                SELECT coalesce(l.vero_id, u.vero_id) AS vero_id, coalesce(l.profile_id, u.profile_id) AS profile_id,
                       coalesce(l.email, u.email) AS email, l.value, u.vero_id IS NOT NULL AS unsettled
                FROM (SELECT * FROM engage.ledger l WHERE \(pair("l"))\(heldInScope)) l
                FULL JOIN \(unsettled) u ON u.vero_id = l.vero_id)
            -- Members Vero can address, with what their id holds.
            SELECT o.profile_id, o.vero_id, o.email, o.value, l.value AS ledger_value,
                   u.vero_id IS NOT NULL AS unsettled, true AS member
            FROM (\(owners)) o
            LEFT JOIN engage.ledger l ON \(pair("l")) AND l.vero_id = o.vero_id
            LEFT JOIN \(unsettled) u ON u.vero_id = o.vero_id
            UNION ALL
            -- Members Vero cannot address: skipped (missing_user_id).
            SELECT profile_id, NULL, email, value, NULL, false, true FROM cur WHERE vero_id IS NULL AND NOT deferred
            UNION ALL
            -- Ids that hold a value and that no member owns: the exit, at that id, with the email
            -- of whoever has that user id now, else the email last sent there.
            SELECT h.profile_id, h.vero_id, CASE WHEN p.profile_id IS NOT NULL THEN p.email ELSE h.email END,
                   \(exitValue)::jsonb, h.value, h.unsettled, false
            FROM held h
            LEFT JOIN engage.profiles p ON p.user_id = h.vero_id
            WHERE \(exits) AND (h.unsettled OR h.value IS DISTINCT FROM \(exitValue)::jsonb)
              AND NOT EXISTS (SELECT 1 FROM cur c WHERE c.vero_id = h.vero_id)
            """, db)
        try await desired.analyze(db)
        guard count else { return desired }
        let resync = mode == .resync
        // The snapshot's size comes from the evaluation (counting it again read every member).
        // Entered and changed count what is told Vero: a member without a Vero id is skipped,
        // as a first sync's fill counts it.
        let members = outcome.evaluation.members
        let row = try await db.query("""
            SELECT count(*) FILTER (WHERE member AND vero_id IS NOT NULL AND \(isChange(resync)) AND value = 'true'::jsonb)::int AS entered,
                   count(*) FILTER (WHERE NOT member)::int AS exited,
                   count(*) FILTER (WHERE member AND vero_id IS NOT NULL AND \(isChange(resync)) AND value <> 'true'::jsonb)::int AS changed,
                   \(members) - count(*) FILTER (WHERE member AND \(isChange(false)))::int AS unchanged,
                   count(*) FILTER (WHERE member AND vero_id IS NULL)::int AS skipped
            FROM \(desired)
            """).first
        outcome.counts.members = members
        if let row {
            outcome.counts.entered = try row.decode(Int.self, "entered")
            outcome.counts.exited = try row.decode(Int.self, "exited")
            outcome.counts.changed = try row.decode(Int.self, "changed")
            outcome.counts.unchanged = try row.decode(Int.self, "unchanged")
            outcome.counts.skipped = try row.decode(Int.self, "skipped")
        }
        if definition.kind == .trait {
            // For traits every change is a "change", including a value going back to empty.
            outcome.counts.changed += outcome.counts.entered + outcome.counts.exited
            outcome.counts.entered = 0
            outcome.counts.exited = 0
        }
        return desired
    }

    /// Why the guardrail blocks this run, or nil. It compares the exits with the audience's
    /// members the destination confirmed (ledger rows holding `true`), counted only as far as
    /// the verdict needs: once there are `exited / max_exit_ratio` of them the run may go on, so
    /// a few exits never count a million-member ledger.
    func blockedByGuardrail(_ guardrail: Guardrail, exited: Int, _ db: PostgresConnection) async throws -> String? {
        guard exited > 0, definition.kind == .audience else { return nil }
        let enough = guardrail.membersToCount(exited: exited)
        let delivered = try await db.query("""
            SELECT count(*)::int AS n FROM (SELECT 1 FROM engage.ledger l
                                            WHERE \(pair("l")) AND l.value = 'true'::jsonb LIMIT \(enough)) confirmed
            """).first?.decode(Int.self, "n") ?? 0
        return guardrail.check(exited: exited, deliveredMembers: delivered)
    }

    /// Whether a row of ``ScratchTable/desired`` must be told.
    func isChange(_ resync: Bool) -> PostgresQuery {
        "(\(resync) OR unsettled OR value IS DISTINCT FROM ledger_value)"
    }

    func op(value: String) -> OutboxOp {
        definition.kind == .trait ? .change : (value == "true" ? .enter : .exit)
    }

    /// A few of the changes, with the Vero ids they go to, for `--dry-run`.
    func examples(_ desired: ScratchTable, _ mode: RunMode, limit: Int, _ db: PostgresConnection) async throws -> [PlannedChange] {
        try await db.query("""
            SELECT profile_id, vero_id, value::text AS value
            FROM \(desired)
            WHERE \(isChange(mode == .resync))
            ORDER BY member, profile_id, vero_id LIMIT \(limit)
            """).map { row in
            let value = try row.decode(String.self, "value")
            return PlannedChange(profileID: try row.decode(String.self, "profile_id"),
                                 userID: try row.decode(String?.self, "vero_id"), op: op(value: value), value: value)
        }
    }

    /// Marks pending rows whose value is no longer what their Vero id should get as superseded.
    /// In a scoped diff, only rows about the ids and profiles it covered are judged.
    func supersede(_ desired: ScratchTable, current: ScratchTable, scope: ScratchTable?, _ db: PostgresConnection) async throws -> Int {
        let inScope: PostgresQuery = scope.map {
            """
             AND (o2.vero_id IN (SELECT vero_id FROM \(desired)) OR o2.profile_id IN (SELECT profile_id FROM \($0)))
             AND o2.profile_id NOT IN (SELECT profile_id FROM \(current) WHERE deferred)
            """
        } ?? ""
        return try await db.query("""
            UPDATE engage.outbox o SET status = 'superseded', updated_at = now()
            FROM (SELECT o2.id FROM engage.outbox o2
                  LEFT JOIN \(desired) d ON d.vero_id = o2.vero_id
                  WHERE \(pair("o2")) AND o2.status = 'pending'\(inScope)
                    AND o2.value IS DISTINCT FROM coalesce(d.value, \(exitValue)::jsonb)) stale
            WHERE o.id = stale.id
            """).affectedRows
    }

    /// Inserts one outbox row per change (two with `send_as: both`: an identify and a track
    /// call), addressed to the change's Vero id. The row holds what varies per change; the
    /// Segment call of docs/architecture.md#how-syncs-behave is built from it when the row is
    /// claimed (``AudienceCall``).
    /// A change already waiting in a pending row for that id, or parked in a failed one
    /// (outside a resync), is not enqueued again. Members Vero cannot address are inserted as
    /// `skipped` with reason `missing_user_id`, once per value while they stay so. With
    /// `members` false, only exits are enqueued (a full diff's members go to the backlog).
    func enqueue(_ desired: ScratchTable, _ mode: RunMode, runID: Int, members: Bool, lease: Lease? = nil, _ db: PostgresConnection)
        async throws -> (pending: Int, skipped: Int, leased: [Int]) {
        let calls: [String]
        switch definition.sendAs {
        case .identify: calls = [AudienceCall.Kind.identify.rawValue]
        case .track: calls = [AudienceCall.Kind.track.rawValue]
        case .both: calls = AudienceCall.Kind.allCases.map(\.rawValue)
        }
        let resync = mode == .resync
        // The changes are found before any is inserted: checked in the statement that inserts,
        // an outbox empty when planned was read whole again for each change, pages the
        // statement had just written included (400 ms for 5,900 changes, growing as a square).
        let changes = ScratchTable.enqueue
        try await changes.create(as: """
                SELECT d.profile_id, d.value, d.email, d.vero_id
                FROM \(desired) d
                WHERE \(isChange(resync)) AND (\(members) OR NOT d.member)
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE \(pair("o")) AND o.vero_id = d.vero_id
                        AND o.value = d.value AND (o.status = 'pending' OR (NOT \(resync) AND o.status = 'failed')))
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE d.vero_id IS NULL AND NOT \(resync)
                        AND \(pair("o")) AND o.vero_id IS NULL
                        AND o.profile_id = d.profile_id AND o.value = d.value AND o.status = 'skipped')
                  -- Confirmed since the comparison read the ledger: a worker delivered a row in
                  -- flight then, so it is no longer pending here (each statement sees the commits
                  -- before it), and its value must not be sent again.
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.ledger l
                      WHERE \(pair("l")) AND l.vero_id = d.vero_id
                        AND l.value = d.value AND l.value IS DISTINCT FROM d.ledger_value)
            """, db)
        let row = try await db.query("""
            WITH inserted AS (
                INSERT INTO engage.outbox (run_id, destination_id, computation_id, profile_id, vero_id, email, op, value,
                                           call, status, reason, locked_until, locked_by)
                SELECT \(runID), \(destination.id), \(computationID), c.profile_id, c.vero_id, c.email,
                       CASE WHEN \(definition.kind.rawValue)::text = 'trait' THEN 'change'
                            WHEN c.value = 'true'::jsonb THEN 'enter' ELSE 'exit' END,
                       c.value, k.call,
                       CASE WHEN c.vero_id IS NULL THEN 'skipped' ELSE 'pending' END,
                       CASE WHEN c.vero_id IS NULL THEN 'missing_user_id' END,
                       CASE WHEN c.vero_id IS NOT NULL AND \(lease != nil)
                            THEN now() + make_interval(secs => \(lease?.seconds ?? 0)) END,
                       CASE WHEN c.vero_id IS NOT NULL THEN \(lease?.worker)::text END
                FROM \(changes) c CROSS JOIN unnest(\(calls)::text[]) AS k(call)
                RETURNING id, status)
            SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
                   count(*) FILTER (WHERE status = 'skipped')::int AS skipped,
                   coalesce(array_agg(id) FILTER (WHERE status = 'pending'), '{}')::text[] AS pending_ids
            FROM inserted
            """).first
        let leased = lease == nil ? [] : try (row?.decode([String].self, "pending_ids") ?? []).compactMap { Int($0) }
        return (try row?.decode(Int.self, "pending") ?? 0, try row?.decode(Int.self, "skipped") ?? 0, leased)
    }
}
