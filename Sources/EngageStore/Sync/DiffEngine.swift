import EngageCore
import Foundation
import PostgresClient

/// One change a run would make, for `--dry-run` examples.
public struct PlannedChange: Sendable {
    public var profileID: String
    /// The Vero id it goes to; nil when the profile has none (it would be skipped).
    public var userID: String?
    public var op: OutboxOp
    /// The value, as JSON text.
    public var value: String
}

/// What a run of one pair asks of the diff engine.
public struct DiffRequest: Sendable {
    public var mode: RunMode
    /// The run the outbox rows belong to; nil for a dry run.
    public var runID: Int?
    /// The run's instant: every window of the evaluation is relative to it.
    public var runAt: Date
    /// Blocks the run when it would exit too many members; nil does not check.
    public var guardrail: Guardrail?
    /// Plan only: return examples and write nothing.
    public var dryRun: Bool
    public var exampleLimit = 5
    /// Active audiences by key, for references.
    public var audiences: [String: Definition] = [:]
    /// Evaluate every profile (`run --full`), whatever the change log says.
    public var fullEvaluation = false
    /// Where SQL definitions' queries run: a read-only transaction on a connection of the pool.
    public var sql: (source: SQLSource, pool: PostgresConnectionPool)?

    public init(mode: RunMode, runID: Int?, runAt: Date, guardrail: Guardrail?, dryRun: Bool) {
        self.mode = mode
        self.runID = runID
        self.runAt = runAt
        self.guardrail = guardrail
        self.dryRun = dryRun
    }
}

/// What the diff engine did for one pair.
public struct DiffOutcome: Sendable {
    public var counts = RunCounts()
    /// Set when the guardrail blocked the run (nothing was written), with why.
    public var blocked: String?
    /// For a dry run: a few of the changes.
    public var examples: [PlannedChange] = []
    public var evaluation = EvaluationOutcome(kind: .full)
    /// Whether the pair's diff covered every profile (else the changed ones since its last run).
    public var fullDiff = true
    public var evaluateSeconds = 0.0
    public var diffSeconds = 0.0
}

/// The evaluation and diff of one (definition, destination) pair, as set-based SQL inside one
/// transaction: evaluate (incrementally where it can: ``Evaluator``), compare with the ledger,
/// supersede stale pending rows, enqueue the changes as Segment calls. Nothing is sent here
/// and nothing is read into Swift row by row; the temporary tables it works in are its own
/// and gone at commit.
///
/// The snapshot is per definition; the diff is per pair. A pair's diff covers every profile on
/// its first sync, a resync or a removal, and otherwise the profiles whose snapshot row changed
/// since its last run (`snapshot_changes`), whose profile row changed (a new user id, a
/// deletion), or which have a row that may have reached Vero unconfirmed.
///
/// What a destination holds is per **Vero user**, so the diff is by Vero id: each id a member
/// owns now should hold that member's value; every id the ledger (or a possibly-sent row)
/// says holds a value and that no member owns now — its profile deleted, its user id changed,
/// or simply out of the audience — is told the exit value, at that id.
public struct DiffEngine: Sendable {
    public let computationID: Int
    public let definition: Definition
    public let destination: Destination

    public init(computationID: Int, definition: Definition, destination: Destination) {
        self.computationID = computationID
        self.definition = definition
        self.destination = destination
    }

    /// Evaluates, diffs and — unless a dry run or the guardrail stops it — supersedes and
    /// enqueues, in one transaction: a crash loses nothing and never half-applies a run.
    public func run(_ request: DiffRequest, on db: PostgresConnection) async throws -> DiffOutcome {
        try await db.withTransaction { tx in
            let db = tx.connection
            var outcome = DiffOutcome()
            // Several destinations share a definition's snapshot: refresh it one run at a time.
            try await db.query("SELECT pg_advisory_xact_lock(\(Self.snapshotLockClass)::int, \(computationID)::int)")
            // What this transaction can see of the change log, taken before reading anything:
            // whatever it cannot see, the next run reads.
            let seen = try await db.query("SELECT pg_current_snapshot()::text AS seen").first?.decode(String.self, "seen") ?? ""
            let watermark = try await loadWatermark(db)
            let firstSync = watermark == nil
            var clock = ContinuousClock.now
            if firstSync, request.mode == .full, !request.dryRun, let runID = request.runID, try await isEmpty(db) {
                // A first sync into an empty snapshot and ledger: one pass, and a backlog.
                let evaluator = Evaluator(computationID: computationID, definition: definition, audiences: request.audiences,
                                          now: request.runAt, runID: runID, fullRequested: nil, sql: request.sql)
                let (evaluation, counts) = try await evaluator.fill(seen: seen, veroID: veroID("r"),
                                                                    distinctVeroIDs: destination.allowEmailID, db)
                outcome.evaluation = evaluation
                outcome.evaluateSeconds = (ContinuousClock.now - clock).seconds
                clock = ContinuousClock.now
                outcome.counts.members = counts.members
                outcome.counts.skipped = counts.unaddressable
                switch definition.kind {
                case .audience: outcome.counts.entered = counts.addressable
                case .trait: outcome.counts.changed = counts.addressable
                }
                try await saveBacklog(runID: runID, resync: false, members: counts.members, db)
                try await saveWatermark(seen: seen, db)
                outcome.diffSeconds = (ContinuousClock.now - clock).seconds
                return outcome
            }
            let evaluator = Evaluator(
                computationID: computationID, definition: definition, audiences: request.audiences, now: request.runAt,
                runID: request.runID,
                fullRequested: request.mode == .resync ? "resync" : request.fullEvaluation ? "run --full"
                    : firstSync && request.mode != .remove ? "the first sync of \(destination.name)" : nil,
                sql: request.sql)
            outcome.evaluation = try await evaluator.evaluate(removed: request.mode == .remove, seen: seen, db)
            outcome.evaluateSeconds = (ContinuousClock.now - clock).seconds
            clock = ContinuousClock.now
            let scope = try await diffScope(request.mode, watermark, db)
            outcome.fullDiff = scope == nil
            // A scoped diff reads few rows too (an incremental evaluation has set this already).
            if scope != nil, outcome.evaluation.kind != .incremental { try await Evaluator.planForFewRows(db) }
            // A full diff leaves its members to a backlog (delivery enqueues them a batch at a
            // time); an incremental diff leaves the members a backlog has not reached yet to it.
            let backlog = try await loadBacklog(db)
            let deferredAfter = scope != nil ? backlog.map { $0.afterProfile ?? "" } : nil
            try await desired(scope: scope, evaluation: outcome.evaluation, deferredAfter: deferredAfter, db)
            try await diff(request.mode, scope: scope, db, into: &outcome)
            if let guardrail = request.guardrail, let reason = try await blockedByGuardrail(guardrail, exited: outcome.counts.exited, db) {
                outcome.blocked = reason
                tx.rollback()
                return outcome
            }
            if request.dryRun {
                outcome.examples = try await examples(request.mode, limit: request.exampleLimit, db)
                tx.rollback()
                return outcome
            }
            outcome.counts.superseded = try await supersede(scope: scope, db)
            if let runID = request.runID {
                // A full diff enqueues only exits here; its members go through the backlog.
                let enqueued = try await enqueue(request.mode, runID: runID, members: scope != nil, db)
                if scope != nil { outcome.counts.skipped = enqueued.skipped }
            }
            if scope == nil, let runID = request.runID {
                try await saveBacklog(runID: runID, resync: request.mode == .resync,
                                      members: request.mode == .remove ? nil : outcome.evaluation.members, db)
            }
            try await saveWatermark(seen: seen, db)
            outcome.diffSeconds = (ContinuousClock.now - clock).seconds
            return outcome
        }
    }

    /// How far this pair's diff has read.
    struct Watermark {
        /// The last `snapshot_changes` row read.
        var changeID: Int
        var seen: String
        /// The exit value the pair's last diff told leavers (nil: not recorded).
        var exitValue: JSONValue?
    }

    private func loadWatermark(_ db: PostgresConnection) async throws -> Watermark? {
        guard let row = try await db.query("""
            SELECT change_id, seen::text AS seen, exit_value::text AS exit_value
            FROM engage.pair_watermarks WHERE \(pair("engage.pair_watermarks"))
            """).first else { return nil }
        return Watermark(changeID: try row.decode(Int.self, "change_id"), seen: try row.decode(String.self, "seen"),
                         exitValue: try row.decode(String?.self, "exit_value").map { try JSONValue.parse($0) })
    }

    private func saveWatermark(seen: String, _ db: PostgresConnection) async throws {
        try await db.query("""
            INSERT INTO engage.pair_watermarks (destination_id, computation_id, change_id, seen, exit_value)
            -- Every change row of this definition up to the sequence's last value is committed:
            -- they are written under its snapshot lock, which this transaction holds.
            SELECT \(destination.id), \(computationID), coalesce(pg_sequence_last_value('engage.snapshot_changes_id_seq'), 0),
                   \(seen)::pg_snapshot, \(exitValue)::jsonb
            ON CONFLICT (destination_id, computation_id) DO UPDATE SET change_id = EXCLUDED.change_id, seen = EXCLUDED.seen,
                exit_value = EXCLUDED.exit_value
            """)
        // The changes every pair of the definition has read are needed no more.
        try await db.query("""
            DELETE FROM engage.snapshot_changes
            WHERE computation_id = \(computationID)
              AND id <= (SELECT min(change_id) FROM engage.pair_watermarks WHERE computation_id = \(computationID))
            """)
    }

    /// nil: the diff covers every profile; else the name of the temporary table of the
    /// profiles it covers (`engage_candidates`). A changed exit value (a redefined trait) is
    /// owed to every id that holds the old one: the diff covers every profile.
    private func diffScope(_ mode: RunMode, _ watermark: Watermark?, _ db: PostgresConnection) async throws -> String? {
        guard mode == .incremental || mode == .full, let watermark else { return nil }
        if let told = watermark.exitValue, told != definition.exitValue { return nil }
        // Every profile, too, after an evaluation that did not list the profiles it changed.
        let whole = try await db.query("""
            SELECT EXISTS (SELECT 1 FROM engage.snapshot_changes s
                           WHERE s.computation_id = \(computationID) AND s.id > \(watermark.changeID) AND s.profile_ids IS NULL)
                OR EXISTS (SELECT 1 FROM engage.profile_changes c
                           WHERE c.source = 'profiles' AND c.profile_ids IS NULL
                             AND c.xid >= pg_snapshot_xmin(\(watermark.seen)::pg_snapshot)
                             AND NOT pg_visible_in_snapshot(c.xid, \(watermark.seen)::pg_snapshot))
                OR pg_snapshot_xmin(\(watermark.seen)::pg_snapshot)
                   < coalesce((SELECT value FROM engage.settings WHERE key = 'profile_changes_pruned_below'), '0')::xid8
                AS whole
            """).first?.decode(Bool.self, "whole") ?? true
        if whole { return nil }
        try await db.query("""
            CREATE TEMP TABLE engage_candidates ON COMMIT DROP AS
            SELECT unnest(s.profile_ids) AS profile_id FROM engage.snapshot_changes s
            WHERE s.computation_id = \(computationID) AND s.id > \(watermark.changeID)
            UNION
            SELECT u.profile_id
            FROM engage.profile_changes c CROSS JOIN LATERAL unnest(c.profile_ids) AS u(profile_id)
            WHERE c.source = 'profiles' AND c.xid >= pg_snapshot_xmin(\(watermark.seen)::pg_snapshot)
              AND NOT pg_visible_in_snapshot(c.xid, \(watermark.seen)::pg_snapshot)
            UNION
            SELECT o.profile_id FROM engage.outbox o
            WHERE \(pair("o")) AND o.status IN ('pending', 'failed') AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
              AND o.profile_id IS NOT NULL
            """)
        try await db.execute("CREATE INDEX ON engage_candidates (profile_id); ANALYZE engage_candidates")
        return "engage_candidates"
    }

    /// The rows the destination should hold, `engage_current (profile_id, value, user_id,
    /// email)`: the snapshot's, for the profiles in scope. The evaluation's result already
    /// has them for the profiles it evaluated (every profile, or the affected ones), so only
    /// the others are read from the snapshot.
    /// `deferred` marks the members an open backlog has not reached (profile id after
    /// `deferredAfter`): they own their Vero ids, but the backlog enqueues them.
    private func desired(scope: String?, evaluation: EvaluationOutcome, deferredAfter: String?,
                         _ db: PostgresConnection) async throws {
        if scope == nil, evaluation.resultHoldsEveryProfile {
            try await db.execute("""
                ALTER TABLE engage_result RENAME TO engage_current;
                ALTER TABLE engage_current ADD COLUMN deferred boolean NOT NULL DEFAULT false
                """)
            try await db.execute("ANALYZE engage_current")
            return
        }
        let deferred: (String) -> PostgresQuery = { alias in
            deferredAfter.map { "\(unescaped: alias).profile_id > \($0)::text" } ?? "false"
        }
        let fromResult: PostgresQuery = """
            SELECT r.profile_id, r.value, r.user_id, r.email, \(deferred("r")) AS deferred FROM engage_result r
            """
        let fromSnapshot: PostgresQuery = """
            SELECT m.profile_id, \(unescaped: definition.snapshotValue("m")) AS value, p.user_id, p.email, \(deferred("m")) AS deferred
            FROM engage.memberships m JOIN engage.profiles p ON p.profile_id = m.profile_id
            WHERE m.computation_id = \(computationID)
            """
        let query: PostgresQuery
        switch (scope, evaluation.resultHoldsEveryProfile, evaluation.resultHoldsAffectedProfiles) {
        case (let scope?, true, _):
            query = "\(fromResult) WHERE r.profile_id IN (SELECT profile_id FROM \(unescaped: scope))"
        case (let scope?, false, true):
            // The affected profiles' rows were just evaluated (the snapshot holds the same);
            // the others in scope (a change this pair has not diffed yet, a retry) are read.
            query = """
                \(fromResult) WHERE r.profile_id IN (SELECT profile_id FROM \(unescaped: scope))
                UNION ALL
                \(fromSnapshot)
                  AND m.profile_id IN (SELECT profile_id FROM \(unescaped: scope)
                                       EXCEPT SELECT profile_id FROM engage_affected)
                """
        case (let scope?, false, false):
            query = "\(fromSnapshot) AND m.profile_id IN (SELECT profile_id FROM \(unescaped: scope))"
        case (nil, _, _):
            query = fromSnapshot
        }
        try await db.query("CREATE TEMP TABLE engage_current ON COMMIT DROP AS \(query)")
        try await db.execute("CREATE INDEX ON engage_current (profile_id); ANALYZE engage_current")
    }

    // MARK: - Backlogs

    /// Rows enqueued already leased to the worker that will send them.
    public struct Lease: Sendable {
        public var seconds: Double
        public var worker: String
        public init(seconds: Double, worker: String) {
            self.seconds = seconds
            self.worker = worker
        }
    }

    /// A pair's open backlog: the members of a full sync or resync still to enqueue.
    struct Backlog {
        var runID: Int
        var resync: Bool
        /// Members up to this profile id are enqueued; nil: none yet.
        var afterProfile: String?
    }

    private func loadBacklog(_ db: PostgresConnection, lock: Bool = false) async throws -> Backlog? {
        guard let row = try await db.query("""
            SELECT run_id, resync, after_profile FROM engage.backlogs b WHERE \(pair("b"))
            \(unescaped: lock ? "FOR UPDATE SKIP LOCKED" : "")
            """).first else { return nil }
        return Backlog(runID: try row.decode(Int.self, "run_id"), resync: try row.decode(Bool.self, "resync"),
                       afterProfile: try row.decode(String?.self, "after_profile"))
    }

    /// A full diff's members (the snapshot's `members` rows) go to a (new) backlog; a removal
    /// (nil) has none, and drops any.
    private func saveBacklog(runID: Int, resync: Bool, members: Int?, _ db: PostgresConnection) async throws {
        guard let members else {
            try await db.query("DELETE FROM engage.backlogs b WHERE \(pair("b"))")
            return
        }
        try await db.query("""
            INSERT INTO engage.backlogs (destination_id, computation_id, run_id, resync, remaining)
            VALUES (\(destination.id), \(computationID), \(runID), \(resync), \(members))
            ON CONFLICT (destination_id, computation_id) DO UPDATE SET
                run_id = EXCLUDED.run_id, resync = EXCLUDED.resync, after_profile = NULL, created_at = now(),
                remaining = EXCLUDED.remaining
            """)
    }

    /// Enqueues the next `limit` members (in profile order) of the pair's open backlog as the
    /// full sync or resync that wrote it would have — against the snapshot, the ledger and the
    /// pending rows as they are now — and moves the backlog past them, in one transaction.
    /// Returns how many members it covered (0: no backlog, or another worker holds it).
    /// With a lease, the rows it enqueues are leased to `lease.worker` for `lease.seconds` (the
    /// caller sends them: no separate claim to write), and their ids returned.
    public func expand(limit: Int, lease: Lease? = nil, on db: PostgresConnection) async throws -> (covered: Int, leased: [Int]) {
        try await db.withTransaction { tx in
            let db = tx.connection
            // The snapshot lock first, as a run takes it (waiting for a run refreshing it), then
            // the backlog row.
            try await db.query("SELECT pg_advisory_xact_lock(\(Self.snapshotLockClass)::int, \(computationID)::int)")
            guard let backlog = try await loadBacklog(db, lock: true) else { return (0, []) }
            // The cursor on both sides: the planner does not carry an inequality across the
            // join, and a merge join would otherwise read every profile before the cursor.
            let after = backlog.afterProfile ?? ""
            try await db.query("""
                CREATE TEMP TABLE engage_current ON COMMIT DROP AS
                SELECT m.profile_id, m.value, p.user_id, p.email, false AS deferred
                FROM engage.memberships m JOIN engage.profiles p ON p.profile_id = m.profile_id
                WHERE m.computation_id = \(computationID) AND m.profile_id > \(after)::text AND p.profile_id > \(after)::text
                ORDER BY m.profile_id LIMIT \(limit)
                """)
            try await db.execute("CREATE INDEX ON engage_current (profile_id); ANALYZE engage_current")
            let row = try await db.query("SELECT count(*)::int AS n, max(profile_id) AS last FROM engage_current").first
            let covered = try row?.decode(Int.self, "n") ?? 0
            let mode: RunMode = backlog.resync ? .resync : .full
            var outcome = DiffOutcome()
            try await diff(mode, scope: "engage_current", exits: false, count: false, db, into: &outcome)
            _ = try await supersede(scope: "engage_current", db)
            let leased = try await enqueue(mode, runID: backlog.runID, members: true, lease: lease, db).leased
            if covered < limit {
                try await db.query("DELETE FROM engage.backlogs b WHERE \(pair("b"))")
            } else {
                // Past the members it read, and any whose profile row is gone (not read, passed).
                let last = try row?.decode(String?.self, "last")
                try await db.query("""
                    UPDATE engage.backlogs b SET after_profile = \(last),
                        remaining = b.remaining - (SELECT count(*) FROM engage.memberships m
                                                   WHERE m.computation_id = \(computationID)
                                                     AND m.profile_id > \(after)::text AND m.profile_id <= \(last)::text)
                    WHERE \(pair("b"))
                    """)
            }
            return (covered, leased)
        }
    }

    /// Nothing of this definition in the snapshot, and nothing of this pair in the ledger or
    /// waiting in the outbox.
    private func isEmpty(_ db: PostgresConnection) async throws -> Bool {
        try await db.query("""
            SELECT NOT EXISTS (SELECT 1 FROM engage.memberships WHERE computation_id = \(computationID))
               AND NOT EXISTS (SELECT 1 FROM engage.ledger l WHERE \(pair("l")))
               AND NOT EXISTS (SELECT 1 FROM engage.outbox o WHERE \(pair("o")) AND o.status IN ('pending', 'failed', 'skipped'))
               AS empty
            """).first?.decode(Bool.self, "empty") ?? false
    }

    /// The first key of the snapshot's advisory lock (the second is the definition's id).
    static let snapshotLockClass = 1_701_733_735

    private var exitValue: PostgresJSON { PostgresJSON(rawJSON: definition.exitValue.jsonString) }

    /// The Vero id of a profile row aliased `alias`: its user id, or its email when the
    /// destination accepts email ids.
    private func veroID(_ alias: String) -> PostgresQuery {
        "coalesce(\(unescaped: alias).user_id, CASE WHEN \(destination.allowEmailID) THEN \(unescaped: alias).email END)"
    }

    /// The pair, as a condition on an outbox or ledger row aliased `alias`.
    private func pair(_ alias: String) -> PostgresQuery {
        "\(unescaped: alias).destination_id = \(destination.id) AND \(unescaped: alias).computation_id = \(computationID)"
    }

    /// Compares `engage_current` with the ledger into `engage_desired`: one row per Vero id
    /// whose value may need telling (members with the ledger's value for their id, and the
    /// exits of ids no member owns), plus members Vero cannot address (`vero_id` NULL).
    ///
    /// `unsettled` marks ids where a row that may have reached Vero (attempted or leased, not
    /// confirmed, not refused with a 4xx) carries another value than the ledger: what Vero
    /// holds there is unknown, so the desired value is sent even when it equals the ledger's, and an id no member
    /// owns gets the exit value even without a ledger row. Without this, a request that timed
    /// out after Vero applied it, then superseded, would leave its value at Vero for ever.
    private func diff(_ mode: RunMode, scope: String?, exits: Bool = true, count: Bool = true, _ db: PostgresConnection,
                      into outcome: inout DiffOutcome) async throws {
        // In a scoped diff, only the rows of the profiles in scope.
        let unsettledInScope = scope.map { " AND o.profile_id IN (SELECT profile_id FROM \($0))" } ?? ""
        try await db.query("""
            CREATE TEMP TABLE engage_unsettled ON COMMIT DROP AS
            SELECT DISTINCT ON (o.vero_id) o.vero_id, o.profile_id, o.email
            FROM engage.outbox o
            WHERE \(pair("o")) AND o.status IN ('pending', 'failed')\(unescaped: unsettledInScope)
              AND o.vero_id IS NOT NULL AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
              AND NOT (o.status = 'failed' AND o.last_status_code BETWEEN 400 AND 499) -- refused: not applied
              -- settled when the ledger has a later confirmation, or the same value
              AND NOT EXISTS (SELECT 1 FROM engage.ledger l
                              WHERE \(pair("l")) AND l.vero_id = o.vero_id
                                AND (o.id <= l.outbox_id OR o.value IS NOT DISTINCT FROM l.value))
            ORDER BY o.vero_id, o.id DESC
            """)
        // With email ids two profiles can share one (the same email); the profile whose user
        // id it is wins, then the lowest profile id. User ids are unique: nothing to choose.
        let owners: PostgresQuery = destination.allowEmailID
            ? "SELECT DISTINCT ON (vero_id) * FROM cur WHERE vero_id IS NOT NULL AND NOT deferred ORDER BY vero_id, user_id IS NULL, profile_id"
            : "SELECT * FROM cur WHERE vero_id IS NOT NULL AND NOT deferred"
        // In a scoped diff, the ids held for the profiles in scope (found through the ledger's
        // profile index, not by reading every id the pair holds). Ids a member owns need no
        // exit, so those held by other profiles need not be read.
        let heldInScope: PostgresQuery = scope.map { " AND l.profile_id IN (SELECT profile_id FROM \(unescaped: $0))" } ?? ""
        try await db.query("""
            CREATE TEMP TABLE engage_desired ON COMMIT DROP AS
            WITH cur AS MATERIALIZED (
                SELECT c.profile_id, c.value, c.user_id, c.email, c.deferred, \(veroID("c")) AS vero_id FROM engage_current c),
            held AS (
                SELECT coalesce(l.vero_id, u.vero_id) AS vero_id, coalesce(l.profile_id, u.profile_id) AS profile_id,
                       coalesce(l.email, u.email) AS email, l.value, u.vero_id IS NOT NULL AS unsettled
                FROM (SELECT * FROM engage.ledger l WHERE \(pair("l"))\(heldInScope)) l
                FULL JOIN engage_unsettled u ON u.vero_id = l.vero_id)
            -- Members Vero can address, with what their id holds.
            SELECT o.profile_id, o.vero_id, o.email, o.value, l.value AS ledger_value,
                   u.vero_id IS NOT NULL AS unsettled, true AS member
            FROM (\(owners)) o
            LEFT JOIN engage.ledger l ON \(pair("l")) AND l.vero_id = o.vero_id
            LEFT JOIN engage_unsettled u ON u.vero_id = o.vero_id
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
            """)
        try await db.execute("ANALYZE engage_desired")
        guard count else { return }
        let resync = mode == .resync
        // The snapshot's size comes from the evaluation (counting it again read every member).
        let members = outcome.evaluation.members
        let row = try await db.query("""
            SELECT count(*) FILTER (WHERE member AND \(isChange(resync)) AND value = 'true'::jsonb)::int AS entered,
                   count(*) FILTER (WHERE NOT member)::int AS exited,
                   count(*) FILTER (WHERE member AND \(isChange(resync)) AND value <> 'true'::jsonb)::int AS changed,
                   \(members) - count(*) FILTER (WHERE member AND \(isChange(false)))::int AS unchanged,
                   count(*) FILTER (WHERE member AND vero_id IS NULL)::int AS skipped
            FROM engage_desired
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
    }

    /// Why the guardrail blocks this run, or nil. It compares the exits with the audience's
    /// members the destination confirmed (ledger rows holding `true`), counted only as far as
    /// the verdict needs: once there are `exited / max_exit_ratio` of them the run may go on, so
    /// a few exits never count a million-member ledger.
    private func blockedByGuardrail(_ guardrail: Guardrail, exited: Int, _ db: PostgresConnection) async throws -> String? {
        guard exited > 0, definition.kind == .audience else { return nil }
        let enough = guardrail.membersToCount(exited: exited)
        let delivered = try await db.query("""
            SELECT count(*)::int AS n FROM (SELECT 1 FROM engage.ledger l
                                            WHERE \(pair("l")) AND l.value = 'true'::jsonb LIMIT \(enough)) confirmed
            """).first?.decode(Int.self, "n") ?? 0
        return guardrail.check(exited: exited, deliveredMembers: delivered)
    }

    /// Whether an `engage_desired` row must be told.
    private func isChange(_ resync: Bool) -> PostgresQuery {
        "(\(resync) OR unsettled OR value IS DISTINCT FROM ledger_value)"
    }

    private func op(value: String) -> OutboxOp {
        definition.kind == .trait ? .change : (value == "true" ? .enter : .exit)
    }

    /// A few of the changes, with the Vero ids they go to, for `--dry-run`.
    private func examples(_ mode: RunMode, limit: Int, _ db: PostgresConnection) async throws -> [PlannedChange] {
        try await db.query("""
            SELECT profile_id, vero_id, value::text AS value
            FROM engage_desired
            WHERE \(isChange(mode == .resync))
            ORDER BY member, profile_id, vero_id LIMIT \(limit)
            """).map { row in
            let value = try row.decode(String.self, "value")
            return PlannedChange(profileID: try row.decode(String.self, "profile_id"),
                                 userID: try row.decode(String?.self, "vero_id"), op: op(value: value), value: value)
        }
    }

    /// Marks pending rows whose value is no longer what their Vero id should get as superseded.
    /// In an incremental diff, only rows about the ids and profiles it covered are judged.
    private func supersede(scope: String?, _ db: PostgresConnection) async throws -> Int {
        let inScope = scope.map {
            " AND (o2.vero_id IN (SELECT vero_id FROM engage_desired) OR o2.profile_id IN (SELECT profile_id FROM \($0)))"
                + " AND o2.profile_id NOT IN (SELECT profile_id FROM engage_current WHERE deferred)"
        } ?? ""
        return try await db.query("""
            UPDATE engage.outbox o SET status = 'superseded', updated_at = now()
            FROM (SELECT o2.id FROM engage.outbox o2
                  LEFT JOIN engage_desired d ON d.vero_id = o2.vero_id
                  WHERE \(pair("o2")) AND o2.status = 'pending'\(unescaped: inScope)
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
    private func enqueue(_ mode: RunMode, runID: Int, members: Bool, lease: Lease? = nil, _ db: PostgresConnection)
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
        try await db.execute("DROP TABLE IF EXISTS engage_enqueue")
        try await db.query("""
            CREATE TEMP TABLE engage_enqueue ON COMMIT DROP AS
                SELECT d.profile_id, d.value, d.email, d.vero_id
                FROM engage_desired d
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
                  -- Confirmed since engage_desired read the ledger: a worker delivered a row in
                  -- flight then, so it is no longer pending here (each statement sees the commits
                  -- before it), and its value must not be sent again.
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.ledger l
                      WHERE \(pair("l")) AND l.vero_id = d.vero_id
                        AND l.value = d.value AND l.value IS DISTINCT FROM d.ledger_value)
            """)
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
                FROM engage_enqueue c CROSS JOIN unnest(\(calls)::text[]) AS k(call)
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

extension Duration {
    /// Seconds as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
