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
    /// Where the evaluation left its rows for the diff, besides the snapshot.
    var rows = EvaluatedRows.snapshotOnly
}

/// Where an evaluation left its rows for the diff, besides the snapshot.
enum EvaluatedRows: Sendable {
    /// Only the snapshot has them (a first fill, or a removal: no profile has a row).
    case snapshotOnly
    /// `rows` holds every profile's row (a full evaluation).
    case everyProfile(ScratchTable)
    /// `rows` holds the rows of the profiles in `profiles` (an incremental evaluation): for
    /// those, the snapshot need not be read again.
    case someProfiles(ScratchTable, profiles: ScratchTable)
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
    /// The changed profiles' rows and events the run's due definitions share, when it copied them.
    var shared: SharedChanges?

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
            try await ScratchTable.result.create(db)
            outcome = EvaluationOutcome(kind: .full, fullBecause: "the definition was removed")
            outcome.changed = try await apply(ScratchTable.result, scope: nil, db).changed
            outcome.rows = .everyProfile(ScratchTable.result)
        } else if let reason = try await fullReason(state, inputs, db) {
            outcome = try await full(compiler, because: reason, db)
        } else if let state, let costly = try await fullCostsLess(inputs, since: state, db) {
            outcome = try await full(compiler, because: costly, db)
        } else if let state {
            let reconcile = now.timeIntervalSince(state.fullAt) >= Double(definition.reconcileEvery.seconds)
            // A reconciling run reads the events as they are now, as the full evaluation after it does.
            outcome = try await incremental(compiler, inputs, since: state, shared: reconcile ? nil : shared, db)
            if reconcile {
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
    /// row aliased `r`). No temporary table, nothing compared: every row is new (the insert
    /// writes them all or fails, so it returns none to count), and the change it records for
    /// the other pairs is "every profile".
    ///
    /// The evaluation's rows are kept for the counts (`MATERIALIZED`), except a SQL
    /// definition's: its compiled query reads the rows its query returned, already in a
    /// table, and reading them twice costs less than keeping them (at 1M rows the statement
    /// took 2.7–2.9 s so, 3.1–3.3 s keeping them; docs/performance.md).
    func fill(seen: String, veroID: PostgresQuery, distinctVeroIDs: Bool, _ db: PostgresConnection) async throws
        -> (EvaluationOutcome, FillCounts) {
        try await rewind(after: try await loadState(db), db)
        let created = try await loadSQLRows(db)
        let compiled = try DefinitionCompiler(audiences: audiences).compile(definition, now: now)
        let addressable: PostgresQuery = distinctVeroIDs ? "count(DISTINCT vero_id)" : "count(vero_id)"
        let kept: PostgresQuery = definition.sqlQuery == nil ? "MATERIALIZED" : "NOT MATERIALIZED"
        try await Self.keepRowsInMemory(db)
        let row = try await db.query("""
            WITH r AS \(kept) (SELECT profile_id, to_jsonb(value) AS value, user_id, email FROM (
            \(compiled)
            ) q),
            added AS (
                INSERT INTO engage.memberships (computation_id, profile_id, value, since, since_run)
                SELECT \(computationID), profile_id, value, \(now), \(runID) FROM r),
            logged AS (
                INSERT INTO engage.snapshot_changes (computation_id, run_id, profile_ids)
                SELECT \(computationID), \(runID), NULL WHERE EXISTS (SELECT 1 FROM r))
            SELECT count(*)::int AS members,
                   \(addressable)::int AS addressable, count(*) FILTER (WHERE vero_id IS NULL)::int AS unaddressable
            FROM (SELECT \(veroID) AS vero_id FROM r) ids
            """).first
        var outcome = EvaluationOutcome(kind: .full, fullBecause: "first evaluation")
        outcome.createdProfiles = created
        let members = try row?.decode(Int.self, "members") ?? 0
        outcome.changed = members
        outcome.affected = members
        outcome.members = members
        let counts = FillCounts(members: members,
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
        if let gap = try await ChangeLog(db).gap(after: state.seen) { return gap }
        return nil
    }

    /// When the change log lists at least this share of the profiles (and at least
    /// ``fullAboveProfiles``), a full evaluation costs less than an incremental one. Measured at
    /// 200k profiles after an ETL that rewrote every profile's traits: the incremental
    /// evaluation of all of them took 1.24 s, the full one 0.60 s, so per profile an incremental
    /// evaluation costs about twice a full one; at a third of the profiles it still costs more
    /// than two thirds of the full one, with the affected set still to write (docs/performance.md).
    static let fullAboveShare = 0.3
    /// Below this many listed profiles an incremental evaluation is cheap whatever the share
    /// (and a small database's statistics are too rough to judge by).
    static let fullAboveProfiles = 10_000

    /// Why evaluating every profile costs less than the incremental evaluation would, or nil:
    /// the change log lists many of the profiles (``fullAboveShare``), as after a nightly ETL
    /// that rewrites every profile. The count is the log's array lengths (an upper bound),
    /// against the planner's estimate of the profiles.
    private func fullCostsLess(_ inputs: EvaluationInputs, since state: State, _ db: PostgresConnection) async throws -> String? {
        let changeLog = ChangeLog(db)
        let listed = try await changeLog.listedCount(after: state.seen, events: inputs.events)
        guard listed >= Self.fullAboveProfiles else { return nil }
        let profiles = try await changeLog.estimatedProfiles()
        guard profiles > 0, Double(listed) >= Self.fullAboveShare * Double(profiles) else { return nil }
        return "the change log lists \(listed) profiles of about \(profiles): a full evaluation costs less"
    }

    /// For a SQL definition, runs its query and leaves its rows matched to profiles in
    /// ``ScratchTable/sqlResult`` (what its compiled query reads); returns the profiles created.
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
        let result = ScratchTable.result
        try await result.create(as: Self.rows(of: try compiler.compile(definition, now: now, scope: nil)), db)
        try await result.indexAndAnalyze(db)
        var outcome = EvaluationOutcome(kind: .full, fullBecause: reason)
        outcome.createdProfiles = created
        outcome.rows = .everyProfile(result)
        outcome.affected = try await db.query("SELECT count(*)::int AS n FROM \(result)").first?.decode(Int.self, "n") ?? 0
        outcome.members = outcome.affected
        outcome.changed = try await apply(result, scope: nil, db).changed
        return outcome
    }

    private func incremental(_ compiler: DefinitionCompiler, _ inputs: EvaluationInputs, since state: State,
                             shared: SharedChanges?, _ db: PostgresConnection) async throws -> EvaluationOutcome {
        try await Self.planForFewRows(db)
        let affected = try await selectAffected(inputs, since: state, db)
        var outcome = EvaluationOutcome(kind: .incremental)
        outcome.affected = try await db.query("SELECT count(*)::int AS n FROM \(affected)").first?.decode(Int.self, "n") ?? 0
        var sources = DefinitionCompiler.Sources()
        if let shared, try await shared.covers(state.seen, db) {
            sources = try await shared.sources(for: affected, db)
        }
        let result = ScratchTable.result
        try await result.create(as: Self.rows(of: try compiler.compile(definition, now: now, scope: affected, sources: sources)), db)
        outcome.rows = .someProfiles(result, profiles: affected)
        let applied = try await apply(result, scope: affected, db)
        outcome.changed = applied.changed
        outcome.members = state.members + applied.added - applied.removed
        return outcome
    }

    /// The rows of ``ScratchTable/result`` from a compiled query: its value as JSON.
    private static func rows(of compiled: PostgresQuery) -> PostgresQuery {
        """
        SELECT profile_id, to_jsonb(value), user_id, email FROM (
        \(compiled)
        ) compiled
        """
    }

    /// The profiles whose result can have changed since `state`: those the change log lists
    /// (a profile row, or an event the definition reads), and those with a matching event whose
    /// time crossed a window's edge between the last instant and this one (left a `within`,
    /// entered or left a `between`).
    private func selectAffected(_ inputs: EvaluationInputs, since state: State, _ db: PostgresConnection) async throws
        -> ScratchTable {
        var sources: [PostgresQuery] = [ChangeLog.changedProfiles(after: state.seen, events: inputs.events)]
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
        let affected = ScratchTable.affected
        try await affected.create(as: """
            SELECT DISTINCT profile_id FROM (\(PostgresQuery.joined(sources, separator: "\nUNION ALL\n"))) a
            WHERE profile_id IS NOT NULL
            """, db)
        try await affected.analyze(db)
        return affected
    }

    /// Lets the rest of the transaction keep up to 64 MB of rows in memory (some 900,000
    /// members of a first fill, kept for its counts) where the default 4 MB sent them to a
    /// temporary file: 100 ms of a 0.8 s first sync at 200k. A database set higher keeps its
    /// own value. After the fill, the transaction does only a few small writes.
    static func keepRowsInMemory(_ db: PostgresConnection) async throws {
        try await db.query("""
            SELECT set_config('work_mem', greatest(pg_size_bytes(current_setting('work_mem')), 64 * 1024 * 1024) / 1024 || 'kB', true)
            """)
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
}
