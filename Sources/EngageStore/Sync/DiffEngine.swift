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
    /// The changed profiles' rows and events the run's due definitions share (``SharedChanges``);
    /// its snapshot is what this pair records as seen.
    public var shared: SharedChanges?

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
/// and nothing is read into Swift row by row; the stages pass their rows in the scratch tables
/// ``ScratchTable`` declares, gone at commit.
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
            // What this transaction can see of the change log, taken before reading anything;
            // with the run's shared copy, the copy's snapshot (older): what committed after it is
            // read again next time.
            let seen: String
            if let shared = request.shared { seen = shared.seen } else { seen = try await ChangeLog(db).currentSnapshot() }
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
                sql: request.sql, shared: request.shared)
            outcome.evaluation = try await evaluator.evaluate(removed: request.mode == .remove, seen: seen, db)
            outcome.evaluateSeconds = (ContinuousClock.now - clock).seconds
            clock = ContinuousClock.now
            let scope = try await selectCandidates(request.mode, watermark, db)
            outcome.fullDiff = scope == nil
            // A scoped diff reads few rows too (an incremental evaluation has set this already).
            if scope != nil, outcome.evaluation.kind != .incremental { try await Evaluator.planForFewRows(db) }
            // A full diff leaves its members to a backlog (delivery enqueues them a batch at a
            // time); an incremental diff leaves the members a backlog has not reached yet to it.
            let backlog = try await loadBacklog(db)
            let deferredAfter = scope != nil ? backlog.map { $0.afterProfile ?? "" } : nil
            let current = try await currentRows(scope: scope, rows: outcome.evaluation.rows, deferredAfter: deferredAfter, db)
            let desired = try await compare(current, request.mode, scope: scope, db, into: &outcome)
            if let guardrail = request.guardrail, let reason = try await blockedByGuardrail(guardrail, exited: outcome.counts.exited, db) {
                outcome.blocked = reason
                tx.rollback()
                return outcome
            }
            if request.dryRun {
                outcome.examples = try await examples(desired, request.mode, limit: request.exampleLimit, db)
                tx.rollback()
                return outcome
            }
            outcome.counts.superseded = try await supersede(desired, current: current, scope: scope, db)
            if let runID = request.runID {
                // A full diff enqueues only exits here; its members go through the backlog.
                let enqueued = try await enqueue(desired, request.mode, runID: runID, members: scope != nil, db)
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

    /// The profiles this pair's diff covers: nil, every profile; else ``ScratchTable/candidates``,
    /// those whose snapshot row changed since its last diff, whose Vero identity changed (a new
    /// user id or email, a deletion), or which have a row that may have reached Vero unconfirmed. A
    /// changed exit value (a redefined trait) is owed to every id that holds the old one, and
    /// an evaluation that did not list the profiles it changed, or a gap in the change log,
    /// leaves nothing to go by: the diff covers every profile.
    private func selectCandidates(_ mode: RunMode, _ watermark: Watermark?, _ db: PostgresConnection) async throws
        -> ScratchTable? {
        guard mode == .incremental || mode == .full, let watermark else { return nil }
        if let told = watermark.exitValue, told != definition.exitValue { return nil }
        let unlisted = try await db.query("""
            SELECT EXISTS (SELECT 1 FROM engage.snapshot_changes s
                           WHERE s.computation_id = \(computationID) AND s.id > \(watermark.changeID) AND s.profile_ids IS NULL)
                AS unlisted
            """).first?.decode(Bool.self, "unlisted") ?? true
        if unlisted { return nil }
        if try await ChangeLog(db).gap(after: watermark.seen, profilesOnly: true) != nil { return nil }
        let candidates = ScratchTable.candidates
        try await candidates.create(as: """
            SELECT unnest(s.profile_ids) FROM engage.snapshot_changes s
            WHERE s.computation_id = \(computationID) AND s.id > \(watermark.changeID)
            UNION
            \(ChangeLog.readdressedProfiles(after: watermark.seen))
            UNION
            SELECT o.profile_id FROM engage.outbox o
            WHERE \(pair("o")) AND o.status IN ('pending', 'failed') AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
              AND o.profile_id IS NOT NULL
            """, db)
        try await candidates.indexAndAnalyze(db)
        return candidates
    }

    /// Nothing of this definition in the snapshot, and nothing of this pair in the ledger or
    /// waiting in the outbox.
    func isEmpty(_ db: PostgresConnection) async throws -> Bool {
        try await db.query("""
            SELECT NOT EXISTS (SELECT 1 FROM engage.memberships WHERE computation_id = \(computationID))
               AND NOT EXISTS (SELECT 1 FROM engage.ledger l WHERE \(pair("l")))
               AND NOT EXISTS (SELECT 1 FROM engage.outbox o WHERE \(pair("o")) AND o.status IN ('pending', 'failed', 'skipped'))
               AS empty
            """).first?.decode(Bool.self, "empty") ?? false
    }

    /// The first key of the snapshot's advisory lock (the second is the definition's id).
    static let snapshotLockClass = 1_701_733_735

    var exitValue: PostgresJSON { PostgresJSON(rawJSON: definition.exitValue.jsonString) }

    /// The Vero id of a profile row aliased `alias`: its user id, or its email when the
    /// destination accepts email ids.
    func veroID(_ alias: String) -> PostgresQuery {
        "coalesce(\(unescaped: alias).user_id, CASE WHEN \(destination.allowEmailID) THEN \(unescaped: alias).email END)"
    }

    /// The pair, as a condition on an outbox or ledger row aliased `alias`.
    func pair(_ alias: String) -> PostgresQuery {
        "\(unescaped: alias).destination_id = \(destination.id) AND \(unescaped: alias).computation_id = \(computationID)"
    }
}

extension Duration {
    /// Seconds as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
