import EngageCore
import Foundation
import PostgresClient

/// How a run evaluated its definition (`engage.sync_runs.evaluation`).
public enum EvaluationKind: String, Sendable, PostgresEncodable, PostgresDecodable {
    /// Every profile.
    case full
    /// Only the profiles whose result can have changed since the last evaluation.
    case incremental
}

/// What the evaluation of a definition did.
public struct EvaluationOutcome: Sendable {
    public var kind: EvaluationKind
    /// Why it was full (nil for an incremental one).
    public var fullBecause: String?
    /// Profiles evaluated: the affected set, or every profile with a value.
    public var affected = 0
    /// Snapshot rows that changed (entered, left or took another value).
    public var changed = 0
    /// Profiles the snapshot holds after the evaluation (members, or profiles with a value).
    public var members = 0
    /// For a reconciling run: profiles whose incrementally kept snapshot differed from the
    /// full evaluation at the same instant (corrected since). Must be 0.
    public var drift: Int?
    /// Profiles a SQL definition's rows created (unknown user ids and emails).
    public var createdProfiles = 0
    /// The result's rows are in the temporary table `engage_result` (a full evaluation);
    /// otherwise only the snapshot has them.
    public var resultHoldsEveryProfile = false
    /// `engage_result` holds the result's rows of the profiles in `engage_affected` (an
    /// incremental evaluation): for them, the snapshot need not be read again.
    public var resultHoldsAffectedProfiles = false
}

/// Keeps a definition's snapshot (`engage.memberships`) equal to its result at the run's
/// instant, evaluating only the profiles whose result can have changed (docs/architecture.md#incremental-evaluation):
/// profiles in the change log that the last evaluation could not see (with the events the
/// definition reads), profiles with a matching event that crossed a window edge between the
/// last instant and this one, and every new or changed profile. Each snapshot row carries its
/// value's `since` (instant and run); a value superseded (the profile left, or its value
/// changed) moves to `engage.membership_history` with its `until`, and the profiles an
/// evaluation changed are listed in `engage.snapshot_changes` for the pairs' diffs. Runs inside
/// the pair's transaction, under the definition's snapshot lock.
struct Evaluator {
    var computationID: Int
    var definition: Definition
    /// Resolves audience references, for the compiler and for the inputs.
    var audiences: [String: Definition]
    var now: Date
    var runID: Int?

    /// Why the evaluation must be full whatever the state says (a resync, `run --full`, a
    /// pair's first sync), or nil.
    var fullRequested: String?
    /// Where a SQL definition's query runs (its own read-only connection); nil when the caller
    /// has no pool, and then a SQL definition cannot be evaluated.
    var sql: (source: SQLSource, pool: PostgresConnectionPool)?

    /// What the result depends on as written (the definition and the audiences it is built on).
    var evaluatedDocument: JSONValue { DefinitionGraph.evaluatedDocument(definition, audiences: audiences) }

    /// The last evaluation of this definition.
    struct State {
        var evaluatedAt: Date
        var seen: String
        var definition: JSONValue
        var fullAt: Date
        /// Profiles in the snapshot after it.
        var members: Int
    }

    /// Evaluates (nil `compiled`: the definition was removed, so nothing is a member), brings
    /// the snapshot to the result and records the new state. `seen` is the transaction's
    /// snapshot, taken before anything was read.
    func evaluate(removed: Bool, seen: String, _ db: PostgresConnection) async throws -> EvaluationOutcome {
        let state = try await loadState(db)
        try await rewind(after: state, db)
        let inputs = EvaluationInputs(definition, audiences: audiences)
        let compiler = DefinitionCompiler(audiences: audiences)
        var outcome: EvaluationOutcome
        if removed {
            try await db.execute("CREATE TEMP TABLE engage_result (profile_id text, value jsonb, user_id text, email text) ON COMMIT DROP")
            outcome = EvaluationOutcome(kind: .full, fullBecause: "the definition was removed")
            outcome.changed = try await apply(scope: nil, db).changed
            outcome.resultHoldsEveryProfile = true
        } else if let reason = try await fullReason(state, inputs, db) {
            outcome = try await full(compiler, because: reason, db)
        } else if let state {
            outcome = try await incremental(compiler, inputs, since: state, db)
            if now.timeIntervalSince(state.fullAt) >= Double(definition.reconcileEvery.seconds) {
                // Reconcile: the snapshot is now current; a full evaluation at the same instant
                // must find nothing to change. What it finds is drift, corrected here.
                let check = try await full(compiler, because: "reconcile_every (\(definition.reconcileEvery)) elapsed", db)
                outcome = check
                outcome.drift = check.changed
            }
        } else {
            outcome = try await full(compiler, because: "first evaluation", db)
        }
        try await saveState(seen: seen, full: outcome.kind == .full, members: outcome.members, db)
        return outcome
    }

    /// How many profiles a first fill wrote, and how many of them a destination can address.
    struct FillCounts {
        var members = 0
        var addressable = 0
        var unaddressable = 0
    }

    /// The first evaluation into an empty snapshot, for a destination's first sync: one
    /// statement evaluates, writes the snapshot (one row per member: nothing is superseded)
    /// and counts the members the destination can address (`veroID`: the Vero id of a result
    /// row aliased `r`). No temporary table, nothing compared: every row is new, and the
    /// change it records for the other pairs is "every profile".
    func fill(seen: String, veroID: PostgresQuery, distinctVeroIDs: Bool, _ db: PostgresConnection) async throws
        -> (EvaluationOutcome, FillCounts) {
        try await rewind(after: try await loadState(db), db)
        let created = try await loadSQLRows(db)
        let compiled = try DefinitionCompiler(audiences: audiences).compile(definition, now: now)
        let addressable: PostgresQuery = distinctVeroIDs ? "count(DISTINCT vero_id)" : "count(vero_id)"
        let row = try await db.query("""
            WITH r AS MATERIALIZED (SELECT profile_id, to_jsonb(value) AS value, user_id, email FROM (
            \(compiled)
            ) q),
            added AS (
                INSERT INTO engage.memberships (computation_id, profile_id, value, since, since_run)
                SELECT \(computationID), profile_id, value, \(now), \(runID) FROM r
                RETURNING 1),
            logged AS (
                INSERT INTO engage.snapshot_changes (computation_id, run_id, profile_ids)
                SELECT \(computationID), \(runID), NULL WHERE EXISTS (SELECT 1 FROM r))
            SELECT (SELECT count(*) FROM added)::int AS changed, count(*)::int AS members,
                   \(addressable)::int AS addressable, count(*) FILTER (WHERE vero_id IS NULL)::int AS unaddressable
            FROM (SELECT \(veroID) AS vero_id FROM r) ids
            """).first
        var outcome = EvaluationOutcome(kind: .full, fullBecause: "first evaluation")
        outcome.createdProfiles = created
        outcome.changed = try row?.decode(Int.self, "changed") ?? 0
        outcome.affected = outcome.changed
        outcome.members = outcome.changed
        let counts = FillCounts(members: try row?.decode(Int.self, "members") ?? 0,
                                addressable: try row?.decode(Int.self, "addressable") ?? 0,
                                unaddressable: try row?.decode(Int.self, "unaddressable") ?? 0)
        // Another destination's backlog of this definition, written while the snapshot was
        // empty, has these members to reach now (rare: counted, not tracked).
        try await db.query("""
            UPDATE engage.backlogs b
            SET remaining = (SELECT count(*) FROM engage.memberships m
                             WHERE m.computation_id = b.computation_id AND m.profile_id > coalesce(b.after_profile, ''))
            WHERE b.computation_id = \(computationID)
            """)
        try await saveState(seen: seen, full: true, members: outcome.members, db)
        return (outcome, counts)
    }

    private func loadState(_ db: PostgresConnection) async throws -> State? {
        guard let row = try await db.query("""
            SELECT evaluated_at, seen::text AS seen, definition::text AS definition, full_at, members::int AS members
            FROM engage.evaluations WHERE computation_id = \(computationID)
            """).first else { return nil }
        return State(evaluatedAt: try row.decode(Date.self, "evaluated_at"), seen: try row.decode(String.self, "seen"),
                     definition: try JSONValue.parse(try row.decode(String.self, "definition")),
                     fullAt: try row.decode(Date.self, "full_at"), members: try row.decode(Int.self, "members"))
    }

    /// Why this evaluation cannot be incremental, or nil when it can.
    private func fullReason(_ state: State?, _ inputs: EvaluationInputs, _ db: PostgresConnection) async throws -> String? {
        if let fullRequested { return fullRequested }
        guard let state else { return "first evaluation" }
        if state.definition != evaluatedDocument {
            return state.definition["definition"] == definition.document ? "an audience it refers to changed" : "the definition changed"
        }
        if now < state.evaluatedAt { return "the clock moved backwards" }
        if let untracked = inputs.untracked { return untracked }
        if inputs.movesWithClockUnindexed { return "within_last moves with the clock" }
        let row = try await db.query("""
            SELECT EXISTS (SELECT 1 FROM engage.profile_changes c
                           WHERE c.profile_ids IS NULL AND c.xid >= pg_snapshot_xmin(\(state.seen)::pg_snapshot)
                             AND NOT pg_visible_in_snapshot(c.xid, \(state.seen)::pg_snapshot)) AS truncated,
                   pg_snapshot_xmin(\(state.seen)::pg_snapshot)
                       < coalesce((SELECT value FROM engage.settings WHERE key = 'profile_changes_pruned_below'), '0')::xid8
                       AS pruned
            """).first
        if try row?.decode(Bool.self, "truncated") == true { return "a source table was truncated" }
        if try row?.decode(Bool.self, "pruned") == true { return "the change log was pruned past the last evaluation" }
        return nil
    }

    /// For a SQL definition, runs its query and leaves its rows matched to profiles in
    /// `engage_sql_result` (what its compiled query reads); returns the profiles created.
    private func loadSQLRows(_ db: PostgresConnection) async throws -> Int {
        guard let query = definition.sqlQuery else { return 0 }
        guard let sql else {
            throw SQLDefinitionError(key: definition.key, reason: "this command cannot run SQL definitions (no connection pool)")
        }
        let shape = try await sql.source.copy(query, kind: definition.kind, key: definition.key, pool: sql.pool, into: db)
        return try await sql.source.resolve(shape, key: definition.key, db)
    }

    private func full(_ compiler: DefinitionCompiler, because reason: String, _ db: PostgresConnection) async throws -> EvaluationOutcome {
        let created = try await loadSQLRows(db)
        try await db.execute("DROP TABLE IF EXISTS engage_result")
        try await db.query("""
            CREATE TEMP TABLE engage_result ON COMMIT DROP AS
            SELECT profile_id, to_jsonb(value) AS value, user_id, email FROM (
            \(try compiler.compile(definition, now: now))
            ) q
            """)
        var outcome = EvaluationOutcome(kind: .full, fullBecause: reason)
        outcome.createdProfiles = created
        outcome.resultHoldsEveryProfile = true
        try await db.execute("CREATE INDEX ON engage_result (profile_id); ANALYZE engage_result")
        outcome.affected = try await db.query("SELECT count(*)::int AS n FROM engage_result").first?.decode(Int.self, "n") ?? 0
        outcome.members = outcome.affected
        outcome.changed = try await apply(scope: nil, db).changed
        return outcome
    }

    private func incremental(_ compiler: DefinitionCompiler, _ inputs: EvaluationInputs, since state: State,
                             _ db: PostgresConnection) async throws -> EvaluationOutcome {
        try await Self.planForFewRows(db)
        var sources: [PostgresQuery] = ["""
            SELECT u.profile_id
            FROM engage.profile_changes c
            CROSS JOIN LATERAL unnest(c.profile_ids, c.events) AS u(profile_id, event)
            WHERE c.xid >= pg_snapshot_xmin(\(state.seen)::pg_snapshot)
              AND NOT pg_visible_in_snapshot(c.xid, \(state.seen)::pg_snapshot)
              AND (c.source = 'profiles' OR u.event = ANY(\(Array(inputs.events))::text[]))
            """]
        // Window edges crossed since the last instant: a matching event whose time left a
        // `within`, or entered or left a `between`.
        for input in inputs.windows.sorted(by: { "\($0)" < "\($1)" }) {
            let edges: [SyncDuration]
            switch input.window {
            case .within(let d): edges = [d]
            case .between(let older, let newer): edges = [older, newer]
            }
            for edge in edges {
                sources.append("""
                    SELECT profile_id FROM engage.events
                    WHERE event = \(input.event)::text
                      AND occurred_at >= \(state.evaluatedAt)::timestamptz - \(edge.intervalText)::interval
                      AND occurred_at < \(now)::timestamptz - \(edge.intervalText)::interval
                    """)
            }
        }
        try await db.query("""
            CREATE TEMP TABLE engage_affected ON COMMIT DROP AS
            SELECT DISTINCT profile_id FROM (\(PostgresQuery.joined(sources, separator: "\nUNION ALL\n"))) a
            WHERE profile_id IS NOT NULL
            """)
        try await db.execute("ANALYZE engage_affected")
        var outcome = EvaluationOutcome(kind: .incremental)
        outcome.resultHoldsAffectedProfiles = true
        outcome.affected = try await db.query("SELECT count(*)::int AS n FROM engage_affected").first?.decode(Int.self, "n") ?? 0
        try await db.query("""
            CREATE TEMP TABLE engage_result ON COMMIT DROP AS
            SELECT profile_id, to_jsonb(value) AS value, user_id, email FROM (
            \(try compiler.compile(definition, now: now, scope: "engage_affected"))
            ) q
            """)
        let applied = try await apply(scope: "engage_affected", db)
        outcome.changed = applied.changed
        outcome.members = state.members + applied.added - applied.removed
        return outcome
    }

    /// Plans the rest of the transaction for reading a few thousand rows by key out of
    /// millions (an incremental evaluation, a scoped diff). PostgreSQL's default
    /// `random_page_cost` (4, for spinning disks) made such statements read whole tables
    /// instead (profiles: 130–210 ms a statement at 1M, for 10,000 rows), and JIT compiled
    /// statements whose row estimates were high (15–50 ms each). A database tuned lower keeps
    /// its own value.
    static func planForFewRows(_ db: PostgresConnection) async throws {
        try await db.query("""
            SELECT set_config('random_page_cost', least(current_setting('random_page_cost')::float8, 1.1)::text, true),
                   set_config('jit', 'off', true)
            """)
    }

    /// What ``apply(scope:_:)`` changed: rows, and of them profiles that came in and went out.
    struct Applied {
        var changed = 0
        var added = 0
        var removed = 0
    }

    /// Brings the snapshot's rows (those of the profiles in `scope`, or all) to `engage_result`:
    /// a superseded value moves to the history (unless it held for no time: set and replaced at
    /// the same instant), the new values enter the snapshot with this run's `since`, and the
    /// profiles changed are listed for the pairs' diffs.
    private func apply(scope: String?, _ db: PostgresConnection) async throws -> Applied {
        let restrict = scope.map { " AND profile_id IN (SELECT profile_id FROM \($0))" } ?? ""
        try await db.execute("DROP TABLE IF EXISTS engage_changes")
        try await db.query("""
            CREATE TEMP TABLE engage_changes ON COMMIT DROP AS
            SELECT coalesce(r.profile_id, m.profile_id) AS profile_id, r.value, m.value AS previous_value
            FROM engage_result r
            FULL JOIN (SELECT profile_id, \(unescaped: definition.snapshotValue("memberships")) AS value FROM engage.memberships
                       WHERE computation_id = \(computationID)\(unescaped: restrict)) m ON m.profile_id = r.profile_id
            WHERE r.value IS DISTINCT FROM m.value
            """)
        let row = try await db.query("""
            WITH changes AS (
                SELECT count(*)::int AS changed, count(*) FILTER (WHERE previous_value IS NULL)::int AS added,
                       count(*) FILTER (WHERE value IS NULL)::int AS removed, array_agg(profile_id) AS profile_ids
                FROM engage_changes),
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
                DELETE FROM engage.memberships m USING engage_changes c
                WHERE m.computation_id = \(computationID) AND m.profile_id = c.profile_id AND c.previous_value IS NOT NULL
                RETURNING m.profile_id, m.value, m.since, m.since_run)
            INSERT INTO engage.membership_history (computation_id, profile_id, value, since, until, since_run, until_run)
            SELECT \(computationID), profile_id, value, since, \(now), since_run, \(runID) FROM superseded
            WHERE since < \(now)::timestamptz
            """)
        try await db.query("""
            INSERT INTO engage.memberships (computation_id, profile_id, value, since, since_run)
            SELECT \(computationID), profile_id, value, \(now), \(runID) FROM engage_changes WHERE value IS NOT NULL
            """)
        // Open backlogs of this definition have the entries past their cursor still to reach,
        // and no longer the exits.
        try await db.query("""
            UPDATE engage.backlogs b SET remaining = b.remaining + moved.n
            FROM (SELECT b2.destination_id,
                         count(*) FILTER (WHERE c.previous_value IS NULL) - count(*) FILTER (WHERE c.value IS NULL) AS n
                  FROM engage.backlogs b2 JOIN engage_changes c ON c.profile_id > coalesce(b2.after_profile, '')
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
    private func rewind(after state: State?, _ db: PostgresConnection) async throws {
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

    private func saveState(seen: String, full: Bool, members: Int, _ db: PostgresConnection) async throws {
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
