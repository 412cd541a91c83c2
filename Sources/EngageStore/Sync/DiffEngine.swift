import EngageCore
import Foundation
import PostgresClient

/// How a run treats the ledger (DESIGN §7).
public enum RunMode: String, Sendable {
    /// The first sync of a pair: every current member / value (the ledger is empty).
    case full
    /// Only what changed since the destination last confirmed.
    case incremental
    /// Every current member again, regardless of the ledger, plus exits for ledger-true leavers.
    case resync
    /// The definition was removed: exits for every ledger-true profile, nothing else.
    case remove
}

/// One change a run would make, for `--dry-run` examples.
public struct PlannedChange: Sendable {
    public var profileID: String
    public var userID: String?
    public var op: String
    public var value: String
}

/// What the diff found, before anything is written.
public struct DiffSummary: Sendable {
    public var counts = RunCounts()
    /// Members whose exit the guardrail compares with `deliveredMembers`.
    public var deliveredMembers = 0
    public var examples: [PlannedChange] = []
}

/// The evaluation and diff of one (definition, destination) pair, as set-based SQL inside one
/// transaction: evaluate into a temporary table, compare with the ledger, supersede stale
/// pending rows, enqueue the changes as Segment calls, refresh the snapshot. Nothing is sent
/// here and nothing is read into Swift row by row.
///
/// What a destination holds is per **Vero user**, so the diff is by Vero id: each id a member
/// owns now should hold that member's value; every id the ledger (or a possibly-sent row)
/// says holds a value and that no member owns now — its profile deleted, its user id changed,
/// or simply out of the audience — is told the exit value, at that id.
public struct DiffEngine: Sendable {
    public let db: PostgresConnection
    public let computationID: Int
    public let definition: Definition
    public let destination: Destination

    public init(db: PostgresConnection, computationID: Int, definition: Definition, destination: Destination) {
        self.db = db
        self.computationID = computationID
        self.definition = definition
        self.destination = destination
    }

    /// The value a profile that leaves is told: `false` for audiences, the aggregate's empty
    /// value (0 or null) for traits.
    var exitValue: String {
        switch definition.kind {
        case .audience: return "false"
        case .trait: return (definition.value?.aggregate.emptyValue ?? .null).jsonString
        }
    }

    /// Evaluates the definition into the temporary table `engage_current` (dropped at commit):
    /// `(profile_id, value, user_id, email)`. With nil, the table is created empty (a removed
    /// definition has no members).
    public func evaluate(_ compiled: CompiledQuery?) async throws {
        if let compiled {
            try await db.query("""
                CREATE TEMP TABLE engage_current ON COMMIT DROP AS
                SELECT profile_id, to_jsonb(value) AS value, user_id, email FROM (
                \(compiled.sql)
                ) q
                """, compiled.parameters)
        } else {
            try await db.execute("CREATE TEMP TABLE engage_current (profile_id text, value jsonb, user_id text, email text) ON COMMIT DROP")
        }
        try await db.execute("CREATE INDEX ON engage_current (profile_id); ANALYZE engage_current")
    }

    /// The Vero id of a profile row aliased `alias`: its user id, or its email when the
    /// destination accepts email ids (`$3` in the statements below).
    private static func veroID(_ alias: String) -> String {
        "coalesce(\(alias).user_id, CASE WHEN $3 THEN \(alias).email END)"
    }

    /// Compares `engage_current` with the ledger into `engage_desired`: one row per Vero id
    /// whose value may need telling (members with the ledger's value for their id, and the
    /// exits of ids no member owns), plus members Vero cannot address (`vero_id` NULL).
    ///
    /// `unsettled` marks ids where a row that may have reached Vero (attempted or leased, not
    /// confirmed, not refused with a 4xx) carries another value than the ledger: what Vero
    /// holds there is unknown,
    /// so the desired value is sent even when it equals the ledger's, and an id no member
    /// owns gets the exit value even without a ledger row. Without this, a request that timed
    /// out after Vero applied it, then superseded, would leave its value at Vero for ever.
    public func diff(mode: RunMode) async throws -> DiffSummary {
        try await db.query("""
            CREATE TEMP TABLE engage_unsettled ON COMMIT DROP AS
            SELECT DISTINCT ON (o.vero_id) o.vero_id, o.profile_id, o.email
            FROM engage.outbox o
            LEFT JOIN engage.ledger l ON l.destination_id = o.destination_id AND l.computation_id = o.computation_id
                                     AND l.vero_id = o.vero_id
            WHERE o.destination_id = $1 AND o.computation_id = $2 AND o.status IN ('pending', 'failed')
              AND o.vero_id IS NOT NULL AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
              AND NOT (o.status = 'failed' AND o.last_status_code BETWEEN 400 AND 499) -- refused: not applied
              AND (l.vero_id IS NULL OR (o.id > l.outbox_id AND o.value IS DISTINCT FROM l.value))
            ORDER BY o.vero_id, o.id DESC
            """, [destination.id, computationID])
        // With email ids two profiles can share one (the same email); the profile whose user
        // id it is wins, then the lowest profile id. User ids are unique: nothing to choose.
        let owners = destination.allowEmailID
            ? "SELECT DISTINCT ON (vero_id) * FROM cur WHERE vero_id IS NOT NULL ORDER BY vero_id, user_id IS NULL, profile_id"
            : "SELECT * FROM cur WHERE vero_id IS NOT NULL"
        try await db.query("""
            CREATE TEMP TABLE engage_desired ON COMMIT DROP AS
            WITH cur AS MATERIALIZED (
                SELECT c.profile_id, c.value, c.user_id, c.email, \(Self.veroID("c")) AS vero_id FROM engage_current c),
            held AS (
                SELECT coalesce(l.vero_id, u.vero_id) AS vero_id, coalesce(l.profile_id, u.profile_id) AS profile_id,
                       coalesce(l.email, u.email) AS email, l.value, u.vero_id IS NOT NULL AS unsettled
                FROM (SELECT * FROM engage.ledger WHERE destination_id = $1 AND computation_id = $2) l
                FULL JOIN engage_unsettled u ON u.vero_id = l.vero_id)
            -- Members Vero can address, with what their id holds.
            SELECT o.profile_id, o.vero_id, o.email, o.value, l.value AS ledger_value,
                   u.vero_id IS NOT NULL AS unsettled, true AS member
            FROM (\(owners)) o
            LEFT JOIN engage.ledger l ON l.destination_id = $1 AND l.computation_id = $2 AND l.vero_id = o.vero_id
            LEFT JOIN engage_unsettled u ON u.vero_id = o.vero_id
            UNION ALL
            -- Members Vero cannot address: skipped (missing_user_id).
            SELECT profile_id, NULL, email, value, NULL, false, true FROM cur WHERE vero_id IS NULL
            UNION ALL
            -- Ids that hold a value and that no member owns: the exit, at that id, with the email
            -- of whoever has that user id now, else the email last sent there.
            SELECT h.profile_id, h.vero_id, CASE WHEN p.profile_id IS NOT NULL THEN p.email ELSE h.email END,
                   $4::jsonb, h.value, h.unsettled, false
            FROM held h
            LEFT JOIN engage.profiles p ON p.user_id = h.vero_id
            WHERE (h.unsettled OR h.value IS DISTINCT FROM $4::jsonb)
              AND NOT EXISTS (SELECT 1 FROM cur c WHERE c.vero_id = h.vero_id)
            """, [destination.id, computationID, destination.allowEmailID, PostgresJSON(rawJSON: exitValue)])
        try await db.execute("ANALYZE engage_desired")
        let resync = mode == .resync
        let row = try await db.query("""
            SELECT (SELECT count(*) FROM engage_current)::int AS members,
                   count(*) FILTER (WHERE member AND \(Self.isChange("$1")) AND value = 'true'::jsonb)::int AS entered,
                   count(*) FILTER (WHERE NOT member)::int AS exited,
                   count(*) FILTER (WHERE member AND \(Self.isChange("$1")) AND value <> 'true'::jsonb)::int AS changed,
                   count(*) FILTER (WHERE member AND value IS NOT DISTINCT FROM ledger_value)::int AS unchanged,
                   (SELECT count(*) FROM engage.ledger WHERE destination_id = $2 AND computation_id = $3 AND value = 'true'::jsonb)::int AS delivered
            FROM engage_desired
            """, [resync, destination.id, computationID]).first
        var summary = DiffSummary()
        if let row {
            summary.counts.members = try row.decode(Int.self, "members")
            summary.counts.entered = try row.decode(Int.self, "entered")
            summary.counts.exited = try row.decode(Int.self, "exited")
            summary.counts.changed = try row.decode(Int.self, "changed")
            summary.counts.unchanged = try row.decode(Int.self, "unchanged")
            summary.deliveredMembers = try row.decode(Int.self, "delivered")
        }
        if definition.kind == .trait {
            // For traits every change is a "change", including a value going back to empty.
            summary.counts.changed += summary.counts.entered + summary.counts.exited
            summary.counts.entered = 0
            summary.counts.exited = 0
        }
        return summary
    }

    /// Whether an `engage_desired` row must be told (`resync` is the name of a boolean parameter).
    private static func isChange(_ resync: String) -> String {
        "(\(resync) OR unsettled OR value IS DISTINCT FROM ledger_value)"
    }

    /// A few of the changes, with the Vero ids they go to, for `--dry-run`.
    public func examples(mode: RunMode, limit: Int) async throws -> [PlannedChange] {
        try await db.query("""
            SELECT profile_id, vero_id, value::text AS value, member
            FROM engage_desired
            WHERE \(Self.isChange("$1"))
            ORDER BY member, profile_id, vero_id LIMIT $2
            """, [mode == .resync, limit]).map { row in
            let value = try row.decode(String.self, "value")
            let op = definition.kind == .trait ? "change" : (value == "true" ? "enter" : "exit")
            return PlannedChange(profileID: try row.decode(String.self, "profile_id"),
                                 userID: try row.decode(String?.self, "vero_id"), op: op, value: value)
        }
    }

    /// Marks pending rows whose value is no longer what their Vero id should get as superseded.
    public func supersede() async throws -> Int {
        try await db.query("""
            UPDATE engage.outbox o SET status = 'superseded', updated_at = now()
            FROM (SELECT o2.id FROM engage.outbox o2
                  LEFT JOIN engage_desired d ON d.vero_id = o2.vero_id
                  WHERE o2.destination_id = $1 AND o2.computation_id = $2 AND o2.status = 'pending'
                    AND o2.value IS DISTINCT FROM coalesce(d.value, $3::jsonb)) stale
            WHERE o.id = stale.id
            """, [destination.id, computationID, PostgresJSON(rawJSON: exitValue)]).affectedRows
    }

    /// Inserts one outbox row per change (two with `send_as: both`), carrying the Segment call
    /// of DESIGN §8 to the change's Vero id. A change already waiting in a pending row for that
    /// id, or parked in a failed one (outside a resync), is not enqueued again. Members Vero
    /// cannot address are inserted as `skipped` with reason `missing_user_id`, once per value
    /// while they stay so. Returns (pending, skipped) counts.
    public func enqueue(runID: Int, mode: RunMode, runAt: Date, spaceID: String) async throws -> (pending: Int, skipped: Int) {
        let kinds: [String]
        switch definition.sendAs {
        case .identify: kinds = ["identify"]
        case .track: kinds = ["track"]
        case .both: kinds = ["identify", "track"]
        }
        let row = try await db.query("""
            WITH changes AS (
                SELECT d.profile_id, d.value, d.email, d.vero_id
                FROM engage_desired d
                WHERE \(Self.isChange("$7"))
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE o.destination_id = $1 AND o.computation_id = $2 AND o.vero_id = d.vero_id
                        AND o.value = d.value AND (o.status = 'pending' OR (NOT $7 AND o.status = 'failed')))
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE d.vero_id IS NULL AND NOT $7
                        AND o.destination_id = $1 AND o.computation_id = $2 AND o.vero_id IS NULL
                        AND o.profile_id = d.profile_id AND o.value = d.value AND o.status = 'skipped')),
            inserted AS (
                INSERT INTO engage.outbox (run_id, destination_id, computation_id, profile_id, vero_id, email, op, value,
                                           message, status, reason)
                SELECT $3, $1, $2, c.profile_id, c.vero_id, c.email,
                       CASE WHEN $8 = 'trait' THEN 'change' WHEN c.value = 'true'::jsonb THEN 'enter' ELSE 'exit' END,
                       c.value,
                       CASE WHEN k.kind = 'identify' THEN jsonb_build_object(
                           'type', 'identify', 'messageId', x.message_id, 'timestamp', x.sent_at, 'userId', c.vero_id,
                           'traits', jsonb_build_object($4::text, c.value)
                               || CASE WHEN c.email IS NOT NULL THEN jsonb_build_object('email', c.email) ELSE '{}'::jsonb END,
                           'context', jsonb_build_object('personas', x.personas),
                           'integrations', jsonb_build_object('All', false, 'Vero', true))
                       ELSE jsonb_build_object(
                           'type', 'track', 'messageId', x.message_id, 'timestamp', x.sent_at, 'userId', c.vero_id,
                           'event', CASE WHEN c.value = 'true'::jsonb THEN 'Audience Entered' ELSE 'Audience Exited' END,
                           'properties', jsonb_build_object('audience_key', $4::text, $4::text, c.value),
                           'context', jsonb_build_object('personas', x.personas)
                               || CASE WHEN c.email IS NOT NULL
                                       THEN jsonb_build_object('traits', jsonb_build_object('email', c.email)) ELSE '{}'::jsonb END,
                           'integrations', jsonb_build_object('All', false, 'Vero', true))
                       END,
                       CASE WHEN c.vero_id IS NULL THEN 'skipped' ELSE 'pending' END,
                       CASE WHEN c.vero_id IS NULL THEN 'missing_user_id' END
                FROM changes c
                CROSS JOIN unnest($11::text[]) AS k(kind)
                -- The run's constant parts, built once (OFFSET 0 keeps them from being inlined per row).
                CROSS JOIN (SELECT
                    to_char($10::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS sent_at,
                    jsonb_build_object('computation_class', $8::text, 'computation_id', $2::text, 'computation_key', $4::text,
                                       'namespace', $5::text, 'space_id', $5::text) AS personas
                    OFFSET 0) run
                -- A profile whose id changed gets two rows in one run (its old id's exit, its new
                -- id's value): the Vero id keeps their message ids apart.
                CROSS JOIN LATERAL (SELECT
                    'engage-' || md5(concat_ws('|', $9::text, $4::text, c.profile_id, c.value::text, $3::text, k.kind, c.vero_id)) AS message_id,
                    run.sent_at, run.personas) x
                RETURNING status)
            SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
                   count(*) FILTER (WHERE status = 'skipped')::int AS skipped
            FROM inserted
            """, [destination.id, computationID, runID, definition.key, spaceID, destination.allowEmailID,
                  mode == .resync, definition.kind.rawValue, destination.name, runAt, kinds]).first
        return (try row?.decode(Int.self, "pending") ?? 0, try row?.decode(Int.self, "skipped") ?? 0)
    }

    /// Makes `engage.memberships` equal `engage_current`, keeping `since` for unchanged values.
    public func refreshSnapshot(at now: Date) async throws {
        try await db.query("""
            DELETE FROM engage.memberships m
            WHERE m.computation_id = $1
              AND NOT EXISTS (SELECT 1 FROM engage_current c WHERE c.profile_id = m.profile_id AND c.value = m.value)
            """, [computationID])
        try await db.query("""
            INSERT INTO engage.memberships (computation_id, profile_id, value, since)
            SELECT $1, c.profile_id, c.value, $2 FROM engage_current c
            WHERE NOT EXISTS (SELECT 1 FROM engage.memberships m WHERE m.computation_id = $1 AND m.profile_id = c.profile_id)
            """, [computationID, now])
    }
}
