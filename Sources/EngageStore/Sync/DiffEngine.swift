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
    /// The run's instant: the evaluation's `now` and the calls' `timestamp`.
    public var runAt: Date
    /// `context.personas.space_id` of the calls.
    public var spaceID: String
    /// Blocks the run when it would exit too many members; nil does not check.
    public var guardrail: Guardrail?
    /// Plan only: return examples and write nothing.
    public var dryRun: Bool
    public var exampleLimit = 5

    public init(mode: RunMode, runID: Int?, runAt: Date, spaceID: String, guardrail: Guardrail?, dryRun: Bool) {
        self.mode = mode
        self.runID = runID
        self.runAt = runAt
        self.spaceID = spaceID
        self.guardrail = guardrail
        self.dryRun = dryRun
    }
}

/// What the diff engine did for one pair.
public struct DiffOutcome: Sendable {
    public var counts = RunCounts()
    /// The audience's members the destination confirmed, which the guardrail compares exits with.
    public var deliveredMembers = 0
    /// Set when the guardrail blocked the run (nothing was written), with why.
    public var blocked: String?
    /// For a dry run: a few of the changes.
    public var examples: [PlannedChange] = []
    public var evaluateSeconds = 0.0
    public var diffSeconds = 0.0
}

/// The evaluation and diff of one (definition, destination) pair, as set-based SQL inside one
/// transaction: evaluate, compare with the ledger, supersede stale pending rows, enqueue the
/// changes as Segment calls, refresh the snapshot. Nothing is sent here and nothing is read
/// into Swift row by row; the temporary tables it works in are its own and gone at commit.
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

    /// Evaluates (the compiled query; nil for a removed definition, which has no members),
    /// diffs and — unless a dry run or the guardrail stops it — supersedes, enqueues and
    /// refreshes the snapshot, in one transaction: a crash loses nothing and never half-applies
    /// a run.
    public func run(_ request: DiffRequest, compiled: PostgresQuery?, on db: PostgresConnection) async throws -> DiffOutcome {
        try await db.withTransaction { tx in
            let db = tx.connection
            var outcome = DiffOutcome()
            // Several destinations share a definition's snapshot: refresh it one run at a time.
            try await db.query("SELECT pg_advisory_xact_lock(\(Self.snapshotLockClass)::int, \(computationID)::int)")
            var clock = ContinuousClock.now
            try await evaluate(compiled, db)
            outcome.evaluateSeconds = (ContinuousClock.now - clock).seconds
            clock = ContinuousClock.now
            try await diff(request.mode, db, into: &outcome)
            if let guardrail = request.guardrail,
               let reason = guardrail.check(exited: outcome.counts.exited, deliveredMembers: outcome.deliveredMembers) {
                outcome.blocked = reason
                tx.rollback()
                return outcome
            }
            if request.dryRun {
                outcome.examples = try await examples(request.mode, limit: request.exampleLimit, db)
                tx.rollback()
                return outcome
            }
            outcome.counts.superseded = try await supersede(db)
            if let runID = request.runID {
                outcome.counts.skipped = try await enqueue(request, runID: runID, db).skipped
            }
            try await refreshSnapshot(at: request.runAt, db)
            outcome.diffSeconds = (ContinuousClock.now - clock).seconds
            return outcome
        }
    }

    /// The first key of the snapshot's advisory lock (the second is the definition's id).
    static let snapshotLockClass = 1_701_733_735

    private var exitValue: PostgresJSON { PostgresJSON(rawJSON: definition.exitValue.jsonString) }

    /// Evaluates into the temporary table `engage_current (profile_id, value, user_id, email)`.
    private func evaluate(_ compiled: PostgresQuery?, _ db: PostgresConnection) async throws {
        if let compiled {
            try await db.query("""
                CREATE TEMP TABLE engage_current ON COMMIT DROP AS
                SELECT profile_id, to_jsonb(value) AS value, user_id, email FROM (
                \(compiled)
                ) q
                """)
        } else {
            try await db.execute("CREATE TEMP TABLE engage_current (profile_id text, value jsonb, user_id text, email text) ON COMMIT DROP")
        }
        try await db.execute("CREATE INDEX ON engage_current (profile_id); ANALYZE engage_current")
    }

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
    private func diff(_ mode: RunMode, _ db: PostgresConnection, into outcome: inout DiffOutcome) async throws {
        try await db.query("""
            CREATE TEMP TABLE engage_unsettled ON COMMIT DROP AS
            SELECT DISTINCT ON (o.vero_id) o.vero_id, o.profile_id, o.email
            FROM engage.outbox o
            LEFT JOIN engage.ledger l ON l.destination_id = o.destination_id AND l.computation_id = o.computation_id
                                     AND l.vero_id = o.vero_id
            WHERE \(pair("o")) AND o.status IN ('pending', 'failed')
              AND o.vero_id IS NOT NULL AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
              AND NOT (o.status = 'failed' AND o.last_status_code BETWEEN 400 AND 499) -- refused: not applied
              AND (l.vero_id IS NULL OR (o.id > l.outbox_id AND o.value IS DISTINCT FROM l.value))
            ORDER BY o.vero_id, o.id DESC
            """)
        // With email ids two profiles can share one (the same email); the profile whose user
        // id it is wins, then the lowest profile id. User ids are unique: nothing to choose.
        let owners: PostgresQuery = destination.allowEmailID
            ? "SELECT DISTINCT ON (vero_id) * FROM cur WHERE vero_id IS NOT NULL ORDER BY vero_id, user_id IS NULL, profile_id"
            : "SELECT * FROM cur WHERE vero_id IS NOT NULL"
        try await db.query("""
            CREATE TEMP TABLE engage_desired ON COMMIT DROP AS
            WITH cur AS MATERIALIZED (
                SELECT c.profile_id, c.value, c.user_id, c.email, \(veroID("c")) AS vero_id FROM engage_current c),
            held AS (
                SELECT coalesce(l.vero_id, u.vero_id) AS vero_id, coalesce(l.profile_id, u.profile_id) AS profile_id,
                       coalesce(l.email, u.email) AS email, l.value, u.vero_id IS NOT NULL AS unsettled
                FROM (SELECT * FROM engage.ledger l WHERE \(pair("l"))) l
                FULL JOIN engage_unsettled u ON u.vero_id = l.vero_id)
            -- Members Vero can address, with what their id holds.
            SELECT o.profile_id, o.vero_id, o.email, o.value, l.value AS ledger_value,
                   u.vero_id IS NOT NULL AS unsettled, true AS member
            FROM (\(owners)) o
            LEFT JOIN engage.ledger l ON \(pair("l")) AND l.vero_id = o.vero_id
            LEFT JOIN engage_unsettled u ON u.vero_id = o.vero_id
            UNION ALL
            -- Members Vero cannot address: skipped (missing_user_id).
            SELECT profile_id, NULL, email, value, NULL, false, true FROM cur WHERE vero_id IS NULL
            UNION ALL
            -- Ids that hold a value and that no member owns: the exit, at that id, with the email
            -- of whoever has that user id now, else the email last sent there.
            SELECT h.profile_id, h.vero_id, CASE WHEN p.profile_id IS NOT NULL THEN p.email ELSE h.email END,
                   \(exitValue)::jsonb, h.value, h.unsettled, false
            FROM held h
            LEFT JOIN engage.profiles p ON p.user_id = h.vero_id
            WHERE (h.unsettled OR h.value IS DISTINCT FROM \(exitValue)::jsonb)
              AND NOT EXISTS (SELECT 1 FROM cur c WHERE c.vero_id = h.vero_id)
            """)
        try await db.execute("ANALYZE engage_desired")
        let resync = mode == .resync
        let row = try await db.query("""
            SELECT (SELECT count(*) FROM engage_current)::int AS members,
                   count(*) FILTER (WHERE member AND \(isChange(resync)) AND value = 'true'::jsonb)::int AS entered,
                   count(*) FILTER (WHERE NOT member)::int AS exited,
                   count(*) FILTER (WHERE member AND \(isChange(resync)) AND value <> 'true'::jsonb)::int AS changed,
                   count(*) FILTER (WHERE member AND value IS NOT DISTINCT FROM ledger_value)::int AS unchanged,
                   (SELECT count(*) FROM engage.ledger l WHERE \(pair("l")) AND l.value = 'true'::jsonb)::int AS delivered
            FROM engage_desired
            """).first
        if let row {
            outcome.counts.members = try row.decode(Int.self, "members")
            outcome.counts.entered = try row.decode(Int.self, "entered")
            outcome.counts.exited = try row.decode(Int.self, "exited")
            outcome.counts.changed = try row.decode(Int.self, "changed")
            outcome.counts.unchanged = try row.decode(Int.self, "unchanged")
            outcome.deliveredMembers = try row.decode(Int.self, "delivered")
        }
        if definition.kind == .trait {
            // For traits every change is a "change", including a value going back to empty.
            outcome.counts.changed += outcome.counts.entered + outcome.counts.exited
            outcome.counts.entered = 0
            outcome.counts.exited = 0
        }
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
    private func supersede(_ db: PostgresConnection) async throws -> Int {
        try await db.query("""
            UPDATE engage.outbox o SET status = 'superseded', updated_at = now()
            FROM (SELECT o2.id FROM engage.outbox o2
                  LEFT JOIN engage_desired d ON d.vero_id = o2.vero_id
                  WHERE \(pair("o2")) AND o2.status = 'pending'
                    AND o2.value IS DISTINCT FROM coalesce(d.value, \(exitValue)::jsonb)) stale
            WHERE o.id = stale.id
            """).affectedRows
    }

    /// Inserts one outbox row per change (two with `send_as: both`), carrying the Segment call
    /// of DESIGN §8 to the change's Vero id. A change already waiting in a pending row for that
    /// id, or parked in a failed one (outside a resync), is not enqueued again. Members Vero
    /// cannot address are inserted as `skipped` with reason `missing_user_id`, once per value
    /// while they stay so.
    private func enqueue(_ request: DiffRequest, runID: Int, _ db: PostgresConnection) async throws -> (pending: Int, skipped: Int) {
        let kinds: [String]
        switch definition.sendAs {
        case .identify: kinds = ["identify"]
        case .track: kinds = ["track"]
        case .both: kinds = ["identify", "track"]
        }
        let resync = request.mode == .resync
        let key = definition.key, kind = definition.kind.rawValue
        let row = try await db.query("""
            WITH changes AS (
                SELECT d.profile_id, d.value, d.email, d.vero_id
                FROM engage_desired d
                WHERE \(isChange(resync))
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE \(pair("o")) AND o.vero_id = d.vero_id
                        AND o.value = d.value AND (o.status = 'pending' OR (NOT \(resync) AND o.status = 'failed')))
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE d.vero_id IS NULL AND NOT \(resync)
                        AND \(pair("o")) AND o.vero_id IS NULL
                        AND o.profile_id = d.profile_id AND o.value = d.value AND o.status = 'skipped')),
            inserted AS (
                INSERT INTO engage.outbox (run_id, destination_id, computation_id, profile_id, vero_id, email, op, value,
                                           message, status, reason)
                SELECT \(runID), \(destination.id), \(computationID), c.profile_id, c.vero_id, c.email,
                       CASE WHEN \(kind) = 'trait' THEN 'change' WHEN c.value = 'true'::jsonb THEN 'enter' ELSE 'exit' END,
                       c.value,
                       CASE WHEN k.kind = 'identify' THEN jsonb_build_object(
                           'type', 'identify', 'messageId', x.message_id, 'timestamp', x.sent_at, 'userId', c.vero_id,
                           'traits', jsonb_build_object(\(key)::text, c.value)
                               || CASE WHEN c.email IS NOT NULL THEN jsonb_build_object('email', c.email) ELSE '{}'::jsonb END,
                           'context', jsonb_build_object('personas', x.personas),
                           'integrations', jsonb_build_object('All', false, 'Vero', true))
                       ELSE jsonb_build_object(
                           'type', 'track', 'messageId', x.message_id, 'timestamp', x.sent_at, 'userId', c.vero_id,
                           'event', CASE WHEN c.value = 'true'::jsonb THEN 'Audience Entered' ELSE 'Audience Exited' END,
                           'properties', jsonb_build_object('audience_key', \(key)::text, \(key)::text, c.value),
                           'context', jsonb_build_object('personas', x.personas)
                               || CASE WHEN c.email IS NOT NULL
                                       THEN jsonb_build_object('traits', jsonb_build_object('email', c.email)) ELSE '{}'::jsonb END,
                           'integrations', jsonb_build_object('All', false, 'Vero', true))
                       END,
                       CASE WHEN c.vero_id IS NULL THEN 'skipped' ELSE 'pending' END,
                       CASE WHEN c.vero_id IS NULL THEN 'missing_user_id' END
                FROM changes c
                CROSS JOIN unnest(\(kinds)::text[]) AS k(kind)
                -- The run's constant parts, built once (OFFSET 0 keeps them from being inlined per row).
                CROSS JOIN (SELECT
                    to_char(\(request.runAt)::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS sent_at,
                    jsonb_build_object('computation_class', \(kind)::text, 'computation_id', \(computationID)::text,
                                       'computation_key', \(key)::text,
                                       'namespace', \(request.spaceID)::text, 'space_id', \(request.spaceID)::text) AS personas
                    OFFSET 0) run
                -- A profile whose id changed gets two rows in one run (its old id's exit, its new
                -- id's value): the Vero id keeps their message ids apart.
                CROSS JOIN LATERAL (SELECT
                    'engage-' || md5(concat_ws('|', \(destination.name)::text, \(key)::text, c.profile_id, c.value::text,
                                               \(runID)::text, k.kind, c.vero_id)) AS message_id,
                    run.sent_at, run.personas) x
                RETURNING status)
            SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
                   count(*) FILTER (WHERE status = 'skipped')::int AS skipped
            FROM inserted
            """).first
        return (try row?.decode(Int.self, "pending") ?? 0, try row?.decode(Int.self, "skipped") ?? 0)
    }

    /// Makes `engage.memberships` equal `engage_current`, keeping `since` for unchanged values.
    private func refreshSnapshot(at now: Date, _ db: PostgresConnection) async throws {
        try await db.query("""
            DELETE FROM engage.memberships m
            WHERE m.computation_id = \(computationID)
              AND NOT EXISTS (SELECT 1 FROM engage_current c WHERE c.profile_id = m.profile_id AND c.value = m.value)
            """)
        try await db.query("""
            INSERT INTO engage.memberships (computation_id, profile_id, value, since)
            SELECT \(computationID), c.profile_id, c.value, \(now) FROM engage_current c
            WHERE NOT EXISTS (SELECT 1 FROM engage.memberships m WHERE m.computation_id = \(computationID) AND m.profile_id = c.profile_id)
            """)
    }
}

extension Duration {
    /// Seconds as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
