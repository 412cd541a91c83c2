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

    /// Evaluates the definition into the temporary table `engage_current` (dropped at commit).
    /// With `empty`, the table is created empty (a removed definition has no members).
    public func evaluate(_ compiled: CompiledQuery?) async throws {
        if let compiled {
            try await db.query("""
                CREATE TEMP TABLE engage_current ON COMMIT DROP AS
                SELECT profile_id, to_jsonb(value) AS value FROM (
                \(compiled.sql)
                ) q
                """, compiled.parameters)
        } else {
            try await db.execute("CREATE TEMP TABLE engage_current (profile_id text, value jsonb) ON COMMIT DROP")
        }
        try await db.execute("CREATE INDEX ON engage_current (profile_id); ANALYZE engage_current")
    }

    /// Compares `engage_current` with the ledger into `engage_desired`: every profile whose
    /// desired value the destination should hold, with what the ledger says.
    public func diff(mode: RunMode) async throws -> DiffSummary {
        try await db.query("""
            CREATE TEMP TABLE engage_desired ON COMMIT DROP AS
            SELECT c.profile_id, c.value, l.value AS ledger_value, true AS member
            FROM engage_current c
            LEFT JOIN engage.ledger l ON l.destination_id = $1 AND l.computation_id = $2 AND l.profile_id = c.profile_id
            UNION ALL
            SELECT l.profile_id, $3::jsonb, l.value, false
            FROM engage.ledger l
            WHERE l.destination_id = $1 AND l.computation_id = $2
              AND l.value IS DISTINCT FROM $3::jsonb
              AND NOT EXISTS (SELECT 1 FROM engage_current c WHERE c.profile_id = l.profile_id)
            """, [destination.id, computationID, PostgresJSON(rawJSON: exitValue)])
        try await db.execute("ANALYZE engage_desired")
        let resync = mode == .resync
        let row = try await db.query("""
            SELECT count(*) FILTER (WHERE member)::int AS members,
                   count(*) FILTER (WHERE member AND ($1 OR value IS DISTINCT FROM ledger_value) AND value = 'true'::jsonb)::int AS entered,
                   count(*) FILTER (WHERE NOT member)::int AS exited,
                   count(*) FILTER (WHERE member AND ($1 OR value IS DISTINCT FROM ledger_value) AND value <> 'true'::jsonb)::int AS changed,
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

    /// A few of the changes, with user ids, for `--dry-run`.
    public func examples(mode: RunMode, limit: Int) async throws -> [PlannedChange] {
        try await db.query("""
            SELECT d.profile_id, p.user_id, d.value::text AS value, d.member
            FROM engage_desired d LEFT JOIN engage.profiles p ON p.profile_id = d.profile_id
            WHERE $1 OR d.value IS DISTINCT FROM d.ledger_value
            ORDER BY d.member, d.profile_id LIMIT $2
            """, [mode == .resync, limit]).map { row in
            let value = try row.decode(String.self, "value")
            let op = definition.kind == .trait ? "change" : (value == "true" ? "enter" : "exit")
            return PlannedChange(profileID: try row.decode(String.self, "profile_id"),
                                 userID: try row.decode(String?.self, "user_id"), op: op, value: value)
        }
    }

    /// Marks pending rows whose value is no longer what the profile should get as superseded.
    public func supersede() async throws -> Int {
        try await db.query("""
            UPDATE engage.outbox o SET status = 'superseded', updated_at = now()
            FROM (SELECT o2.id FROM engage.outbox o2
                  LEFT JOIN engage_current c ON c.profile_id = o2.profile_id
                  WHERE o2.destination_id = $1 AND o2.computation_id = $2 AND o2.status = 'pending'
                    AND o2.value IS DISTINCT FROM coalesce(c.value, $3::jsonb)) stale
            WHERE o.id = stale.id
            """, [destination.id, computationID, PostgresJSON(rawJSON: exitValue)]).affectedRows
    }

    /// Inserts one outbox row per change (two with `send_as: both`), carrying the Segment call
    /// of DESIGN §8. A change already waiting in a pending row, or parked in a skipped or failed
    /// one (outside a resync), is not enqueued again. Profiles Vero cannot address are inserted
    /// as `skipped` with reason `missing_user_id`. Returns (pending, skipped) counts.
    public func enqueue(runID: Int, mode: RunMode, runAt: Date, spaceID: String) async throws -> (pending: Int, skipped: Int) {
        let kinds: [String]
        switch definition.sendAs {
        case .identify: kinds = ["identify"]
        case .track: kinds = ["track"]
        case .both: kinds = ["identify", "track"]
        }
        let row = try await db.query("""
            WITH changes AS (
                SELECT d.profile_id, d.value, p.email,
                       coalesce(p.user_id, CASE WHEN $6 THEN p.email END) AS vero_id
                FROM engage_desired d
                LEFT JOIN engage.profiles p ON p.profile_id = d.profile_id
                WHERE ($7 OR d.value IS DISTINCT FROM d.ledger_value)
                  AND NOT EXISTS (
                      SELECT 1 FROM engage.outbox o
                      WHERE o.destination_id = $1 AND o.computation_id = $2 AND o.profile_id = d.profile_id
                        AND o.value = d.value
                        AND (o.status = 'pending'
                             OR (NOT $7 AND o.status = 'failed')
                             OR (NOT $7 AND o.status = 'skipped'
                                 AND coalesce(p.user_id, CASE WHEN $6 THEN p.email END) IS NULL)))),
            inserted AS (
                INSERT INTO engage.outbox (run_id, destination_id, computation_id, profile_id, op, value, message, status, reason)
                SELECT $3, $1, $2, c.profile_id,
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
                CROSS JOIN LATERAL (SELECT
                    'engage-' || md5(concat_ws('|', $9::text, $4::text, c.profile_id, c.value::text, $3::text, k.kind)) AS message_id,
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
