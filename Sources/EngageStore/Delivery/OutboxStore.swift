import EngageCore
import Foundation
import PostgresClient

/// An outbox row a worker has leased, to send.
public struct ClaimedRow: Sendable {
    /// The Segment call a row stands for.
    public enum Call: Sendable {
        /// Stored with the row, as JSON text (forwarded calls, rows from before migration 0009).
        case stored(String)
        /// A definition's change, built from the row and its run.
        case built(AudienceCall)
    }

    public var id: Int
    public var call: Call
    /// Attempts made before this one.
    public var attempts: Int

    /// The Segment message to map; throws when a stored call does not decode.
    public func message() throws -> SegmentMessage {
        switch call {
        case .stored(let text): try SegmentMessage(line: text)
        case .built(let call): try call.message
        }
    }
}

/// What became of one claimed row.
public struct DeliveryResult: Sendable {
    public enum Kind: String, Sendable {
        /// 2xx for every request of the row: delivered, and the ledger advances.
        case delivered
        /// Worth another try after `delay` seconds (or failed, once attempts are used up).
        case retry
        /// A permanent 4xx.
        case failed
        /// The mapper refused the call (`missing_user_id`, ...): never sent.
        case rejected
        /// 401/403: the row stays pending; the destination stops.
        case credentials
        /// Not sent (the worker stopped): the lease is given back, no attempt counted.
        case released
    }

    public var id: Int
    public var kind: Kind
    public var statusCode: Int?
    /// The error or rejection reason; the first 1 KiB of the body for HTTP errors.
    public var error: String?
    /// Seconds until the next attempt (retry only).
    public var delay: Double
    /// The Vero request(s) as sent, without the token.
    public var request: JSONValue?

    public init(id: Int, kind: Kind, statusCode: Int? = nil, error: String? = nil, delay: Double = 0, request: JSONValue? = nil) {
        self.id = id
        self.kind = kind
        self.statusCode = statusCode
        self.error = error
        self.delay = delay
        self.request = request
    }
}

/// How a recorded batch turned out.
public struct RecordedCounts: Sendable {
    public var delivered = 0
    public var retrying = 0
    public var failed = 0
    public var rejected = 0
    /// Results of rows sent to the destination while the recording worker no longer held
    /// them (its lease was lost and another worker took the row, or the row was recorded
    /// already): the destination may have received them twice; nothing was recorded for them.
    public var repeated = 0

    public init() {}

    public static func += (lhs: inout RecordedCounts, rhs: RecordedCounts) {
        lhs.delivered += rhs.delivered
        lhs.retrying += rhs.retrying
        lhs.failed += rhs.failed
        lhs.rejected += rhs.rejected
        lhs.repeated += rhs.repeated
    }
}

/// Claims outbox rows with leases and records delivery results (docs/architecture.md#how-syncs-behave).
public struct OutboxStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Leases up to `limit` pending rows of a destination that are due, oldest first.
    /// `FOR UPDATE SKIP LOCKED` lets any number of workers share the outbox; a row whose lease
    /// expired (its worker died) is claimed again — by another worker: a worker never re-claims
    /// its own rows, which it may still be about to send (a slow batch outliving its lease).
    ///
    /// A definition's row comes back with what its Segment call is built from: the row, its
    /// definition, its run's instant, the space, and the message id (a stable hash of
    /// destination, key, profile, value, run, call and Vero id).
    ///
    /// With `dueBy`, only rows due by then are taken (a pass leaves the retries it scheduled
    /// itself to the next pass, or to its wait for retries).
    public func claim(destinationID: Int, limit: Int, leaseSeconds: Double, worker: String,
                      dueBy: Date? = nil) async throws -> [ClaimedRow] {
        try await db.query("""
            WITH due AS (
                SELECT id FROM engage.outbox
                WHERE destination_id = \(destinationID) AND status = 'pending'
                  AND next_attempt_at <= least(now(), coalesce(\(dueBy)::timestamptz, now()))
                  AND (locked_until IS NULL OR (locked_until < now() AND locked_by IS DISTINCT FROM \(worker)))
                ORDER BY next_attempt_at, id
                LIMIT \(limit)
                FOR UPDATE SKIP LOCKED),
            claimed AS (
                UPDATE engage.outbox o
                SET locked_until = now() + make_interval(secs => \(leaseSeconds)), locked_by = \(worker)
                FROM due WHERE o.id = due.id
                RETURNING o.id)
            \(Self.callFields) JOIN claimed ON claimed.id = o.id
            ORDER BY o.id
            """).map(Self.claimedRow)
    }

    /// Extends the lease of the rows among `ids` that `worker` still holds, in one statement.
    /// Returns those (`kept`) and the ones another worker holds now (`taken`: this worker's
    /// lease ran out and it was claimed again). The others were recorded meanwhile.
    public func renew(ids: [Int], leaseSeconds: Double, worker: String) async throws -> (kept: Set<Int>, taken: Set<Int>) {
        guard !ids.isEmpty else { return ([], []) }
        let array = ids.map(String.init)
        var kept = Set<Int>(), taken = Set<Int>()
        // The outer query reads the rows as they were before the update: a row another
        // worker holds is one the update left alone.
        for row in try await db.query("""
            WITH renewed AS (
                UPDATE engage.outbox SET locked_until = now() + make_interval(secs => \(leaseSeconds))
                WHERE id = ANY(\(array)::bigint[]) AND locked_by = \(worker) AND status IN ('pending', 'superseded')
                RETURNING id)
            SELECT o.id, r.id IS NOT NULL AS kept
            FROM engage.outbox o LEFT JOIN renewed r ON r.id = o.id
            WHERE o.id = ANY(\(array)::bigint[]) AND (r.id IS NOT NULL OR o.locked_by <> \(worker))
            """) {
            let id = try row.decode(Int.self, "id")
            if try row.decode(Bool.self, "kept") { kept.insert(id) } else { taken.insert(id) }
        }
        return (kept, taken)
    }

    /// Rows this worker already leased (as ``BacklogStore`` enqueues them), to send.
    public func leased(ids: [Int]) async throws -> [ClaimedRow] {
        guard !ids.isEmpty else { return [] }
        return try await db.query("""
            \(Self.callFields) WHERE o.id = ANY(\(ids.map(String.init))::bigint[])
            ORDER BY o.id
            """).map(Self.claimedRow)
    }

    /// A row and what its call is built from: its definition, its run's instant, the space,
    /// and the message id (a stable hash of destination, key, profile, value, run, call and
    /// Vero id). Reads outbox rows aliased `o`.
    private static let callFields: PostgresQuery = """
        SELECT o.id, o.attempts, o.message::text AS message, o.call, o.vero_id, o.email, o.value::text AS value,
               o.computation_id, c.key, c.type, r.instant, s.value AS space_id,
               'engage-' || md5(concat_ws('|', d.name, c.key, o.profile_id, o.value::text, o.run_id::text, o.call, o.vero_id))
                   AS message_id
        FROM engage.outbox o
        JOIN engage.destinations d ON d.id = o.destination_id
        LEFT JOIN engage.computations c ON c.id = o.computation_id
        LEFT JOIN engage.sync_runs r ON r.id = o.run_id
        LEFT JOIN engage.settings s ON s.key = 'space_id'
        """

    private static func claimedRow(_ row: PostgresRow) throws -> ClaimedRow {
        let id = try row.decode(Int.self, "id"), attempts = try row.decode(Int.self, "attempts")
        guard let kind = try row.decode(String?.self, "call").flatMap(AudienceCall.Kind.init(rawValue:)) else {
            return ClaimedRow(id: id, call: .stored(try row.decode(String?.self, "message") ?? "null"), attempts: attempts)
        }
        let call = AudienceCall(
            kind: kind, messageID: try row.decode(String.self, "message_id"),
            timestamp: try row.decode(Date?.self, "instant") ?? Date(), userID: try row.decode(String.self, "vero_id"),
            email: try row.decode(String?.self, "email"), key: try row.decode(String.self, "key"),
            value: try JSONValue.parse(try row.decode(String.self, "value")),
            computationClass: try row.decode(String.self, "type") == Definition.Kind.trait.rawValue ? .trait : .audience,
            computationID: try row.decode(Int.self, "computation_id"), spaceID: try row.decode(String?.self, "space_id") ?? "unknown")
        return ClaimedRow(id: id, call: .built(call), attempts: attempts)
    }

    /// Records results in one statement: marks rows and, for delivered ones that carry a
    /// definition's value, advances the ledger in the same transaction. Only rows `worker`
    /// still holds are written: a result for a row another worker now holds (this worker's
    /// lease was lost) or one already recorded is left alone, and counted as `repeated` when
    /// it was sent. A superseded row that was delivered anyway is recorded as delivered (it
    /// was), so the ledger tells the truth.
    public func record(_ results: [DeliveryResult], maxAttempts: Int, worker: String) async throws -> RecordedCounts {
        guard !results.isEmpty else { return RecordedCounts() }
        let json = JSONValue.array(results.map { r in
            .object([
                "id": .int(r.id), "kind": .string(r.kind.rawValue), "code": r.statusCode.map { .int($0) } ?? .null,
                "error": r.error.map { .string(String($0.prefix(1024))) } ?? .null,
                "delay": .double(r.delay), "request": r.request ?? .null,
            ])
        })
        let payload = PostgresJSON(rawJSON: String(decoding: json.jsonBytes(sortedKeys: false), as: UTF8.self))
        let rows = try await db.query("""
            WITH r AS (
                SELECT * FROM jsonb_to_recordset(\(payload)::jsonb)
                    AS r(id bigint, kind text, code integer, error text, delay double precision, request jsonb)),
            upd AS (
                UPDATE engage.outbox o SET
                    status = CASE
                        WHEN r.kind = 'delivered' THEN 'delivered'
                        WHEN o.status = 'superseded' THEN 'superseded'
                        WHEN r.kind IN ('rejected', 'failed') THEN r.kind
                        WHEN r.kind = 'retry' AND o.attempts + 1 >= \(maxAttempts) THEN 'failed'
                        ELSE 'pending' END,
                    attempts = o.attempts + CASE WHEN r.kind IN ('released', 'rejected') THEN 0 ELSE 1 END,
                    reason = CASE WHEN r.kind = 'rejected' THEN r.error ELSE o.reason END,
                    last_status_code = CASE WHEN r.kind IN ('released', 'rejected') THEN o.last_status_code ELSE r.code END,
                    last_error = CASE WHEN r.kind = 'delivered' THEN NULL
                                      WHEN r.kind = 'released' THEN o.last_error ELSE r.error END,
                    next_attempt_at = now() + make_interval(secs => coalesce(r.delay, 0)),
                    locked_until = NULL, locked_by = NULL, updated_at = now(),
                    delivered_at = CASE WHEN r.kind = 'delivered' THEN now() ELSE o.delivered_at END,
                    request = coalesce(r.request, o.request)
                FROM r
                -- The ids again, as an array: with statistics from before a backlog filled the
                -- outbox, the planner otherwise drove this from a status index or a scan,
                -- comparing each result with every pending row (50 ms a statement, not 1).
                WHERE o.id = r.id AND o.id = ANY(\(results.map { String($0.id) })::bigint[])
                  AND o.status IN ('pending', 'superseded') AND o.locked_by = \(worker)
                RETURNING o.id, o.status, o.destination_id, o.computation_id, o.profile_id, o.value, r.kind,
                          coalesce(o.vero_id, o.message ->> 'userId') AS vero_id,
                          coalesce(o.email, o.message #>> '{traits,email}', o.message #>> '{context,traits,email}') AS email),
            ledger AS (
                -- What the Vero user the row addressed now holds, whichever profile owns it.
                INSERT INTO engage.ledger (destination_id, computation_id, vero_id, profile_id, email, value, confirmed_at, outbox_id)
                SELECT destination_id, computation_id, vero_id, profile_id, email, value, now(), id FROM upd
                WHERE status = 'delivered' AND computation_id IS NOT NULL AND vero_id IS NOT NULL AND value IS NOT NULL
                ON CONFLICT (destination_id, computation_id, vero_id) DO UPDATE
                    SET value = EXCLUDED.value, profile_id = EXCLUDED.profile_id, email = EXCLUDED.email,
                        confirmed_at = EXCLUDED.confirmed_at, outbox_id = EXCLUDED.outbox_id
                    WHERE engage.ledger.outbox_id < EXCLUDED.outbox_id
                RETURNING 1)
            SELECT count(*) FILTER (WHERE status = 'delivered')::int AS delivered,
                   count(*) FILTER (WHERE status = 'pending' AND kind = 'retry')::int AS retrying,
                   count(*) FILTER (WHERE status = 'failed')::int AS failed,
                   count(*) FILTER (WHERE status = 'rejected')::int AS rejected,
                   (SELECT count(*) FROM r WHERE kind NOT IN ('released', 'rejected'))::int
                       - count(*) FILTER (WHERE kind NOT IN ('released', 'rejected'))::int AS repeated,
                   (SELECT count(*) FROM ledger)::int AS ledger
            FROM upd
            """)
        var counts = RecordedCounts()
        if let row = rows.first {
            counts.delivered = try row.decode(Int.self, "delivered")
            counts.retrying = try row.decode(Int.self, "retrying")
            counts.failed = try row.decode(Int.self, "failed")
            counts.rejected = try row.decode(Int.self, "rejected")
            counts.repeated = try row.decode(Int.self, "repeated")
        }
        return counts
    }

    /// The database's clock now.
    public func now() async throws -> Date {
        try await db.query("SELECT now() AS now").first?.decode(Date.self, "now") ?? Date()
    }

    /// When the next pending row of a destination becomes due (nil: none pending).
    public func nextDue(destinationID: Int) async throws -> Date? {
        try await db.query("""
            SELECT min(greatest(next_attempt_at, coalesce(locked_until, next_attempt_at))) AS due
            FROM engage.outbox WHERE destination_id = \(destinationID) AND status = 'pending'
            """).first?.decode(Date?.self, "due")
    }

    /// Enqueues Segment calls for a destination as they are (`forward`): one pending row each,
    /// or a rejected row with the mapper's reason. Returns the run they belong to.
    public func enqueueForward(runID: Int, destinationID: Int,
                               rows: [(message: String, rejection: String?)]) async throws {
        guard !rows.isEmpty else { return }
        let payload = JSONValue.array(rows.map { row in
            .object(["message": .string(row.message), "reason": row.rejection.map { .string($0) } ?? .null])
        })
        try await db.query("""
            INSERT INTO engage.outbox (run_id, destination_id, op, message, status, reason)
            SELECT \(runID), \(destinationID), 'forward', r.message::jsonb,
                   CASE WHEN r.reason IS NULL THEN 'pending' ELSE 'rejected' END, r.reason
            FROM jsonb_to_recordset(\(PostgresJSON(rawJSON: payload.jsonString))::jsonb) AS r(message text, reason text)
            """)
    }
}
