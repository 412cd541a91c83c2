import EngageCore
import Foundation
import PostgresClient
import Testing

@testable import EngageStore

/// Drives the evaluator and the diff engine in process against a test database, as a run
/// does (no binary spawned), and reads back what they wrote.
struct PipelineFixture {
    let db: PostgresConnection
    var f: Fixture { Fixture(db: db) }

    /// An instant `hours` after ``Fixture/now``.
    static func at(hours: Double) -> Date { Fixture.now.addingTimeInterval(hours * 3600) }

    /// Parses and stores a definition; returns it as stored.
    @discardableResult
    func define(_ json: String) async throws -> StoredDefinition {
        let definition = try DefinitionParser.parse(try JSONValue.parse(json)).get()
        let repository = DefinitionRepository(db)
        _ = try await repository.save([DefinitionInput(definition: definition, location: "test")])
        return try await repository.active(key: definition.key)
    }

    func destination(_ name: String = "vero") async throws -> Destination {
        try await DestinationRepository(db).upsert(name: name, settings: DestinationSettings(baseURL: "http://127.0.0.1:9"))
    }

    /// One evaluation of `key` at `now`, in its own transaction, as a run's diff engine calls it.
    /// With `shared`, the evaluation may read the shared copy of events and records its snapshot.
    func evaluate(_ key: String, at now: Date, full: String? = nil, shared: SharedChanges? = nil) async throws -> EvaluationOutcome {
        let stored = try await DefinitionRepository(db).active(key: key)
        let audiences = try await DefinitionRepository(db).audiences()
        return try await db.withTransaction { tx in
            let seen: String
            if let shared { seen = shared.seen } else { seen = try await ChangeLog(tx.connection).currentSnapshot() }
            let evaluator = Evaluator(computationID: stored.id, definition: stored.definition, audiences: audiences, now: now,
                                      runID: nil, fullRequested: full, sql: nil, shared: shared)
            return try await evaluator.evaluate(removed: false, seen: seen, tx.connection)
        }
    }

    /// One run of the pair (`key`, `destination`): the diff engine's transaction, with a run row.
    func run(_ key: String, to destination: Destination, _ mode: RunMode, at now: Date, dryRun: Bool = false,
             guardrail: Guardrail? = nil) async throws -> DiffOutcome {
        let stored = try await DefinitionRepository(db).active(key: key)
        let runID = dryRun ? nil : try await SyncRunStore(db).start(computationID: stored.id, destinationID: destination.id,
                                                                     mode: mode, instant: now)
        var request = DiffRequest(mode: mode, runID: runID, runAt: now, guardrail: guardrail, dryRun: dryRun)
        request.audiences = try await DefinitionRepository(db).audiences()
        let outcome = try await DiffEngine(computationID: stored.id, definition: stored.definition, destination: destination)
            .run(request, on: db)
        if let runID {
            try await SyncRunStore(db).finish(id: runID, status: .succeeded, counts: outcome.counts, evaluation: outcome.evaluation)
        }
        return outcome
    }

    /// The engine of the pair (`key`, `destination`) as stored now.
    func engine(_ key: String, to destination: Destination) async throws -> DiffEngine {
        let stored = try await DefinitionRepository(db).active(key: key)
        return DiffEngine(computationID: stored.id, definition: stored.definition, destination: destination)
    }

    /// Defines `json`, adds the destination `vero` and runs the pair's first sync at
    /// ``Fixture/now``; its backlog expanded by up to `expanding` members, every row they
    /// enqueued confirmed.
    func firstSyncConfirmed(_ json: String, expanding limit: Int) async throws -> (key: String, vero: Destination) {
        let key = try await define(json).definition.key
        let vero = try await destination()
        _ = try await run(key, to: vero, .full, at: Fixture.now)
        _ = try await engine(key, to: vero).expand(limit: limit, on: db)
        try await confirmPending()
        return (key, vero)
    }

    /// The snapshot of `key`: profile id → value (JSON text), with each row's `since`.
    func snapshot(_ key: String) async throws -> [String: (value: String, since: Date)] {
        var rows: [String: (value: String, since: Date)] = [:]
        for row in try await db.query("""
            SELECT m.profile_id, m.value::text AS value, m.since FROM engage.memberships m
            JOIN engage.computations c ON c.id = m.computation_id WHERE c.key = \(key)
            """) {
            rows[try row.decode(String.self, "profile_id")] = (try row.decode(String.self, "value"), try row.decode(Date.self, "since"))
        }
        return rows
    }

    struct Superseded: Equatable {
        var profile: String
        var value: String
        var since: Date?
        var until: Date
    }

    /// The superseded values of `key`, by profile and `until`.
    func history(_ key: String) async throws -> [Superseded] {
        try await db.query("""
            SELECT h.profile_id, h.value::text AS value, h.since, h.until FROM engage.membership_history h
            JOIN engage.computations c ON c.id = h.computation_id WHERE c.key = \(key) ORDER BY h.profile_id, h.until
            """).map {
            Superseded(profile: try $0.decode(String.self, "profile_id"), value: try $0.decode(String.self, "value"),
                       since: try $0.decode(Date?.self, "since"), until: try $0.decode(Date.self, "until"))
        }
    }

    /// The members of `key` at instant `at`, from `engage.members_at` (snapshot and history).
    func members(_ key: String, at: Date) async throws -> Set<String> {
        Set(try await db.query("SELECT profile_id FROM engage.members_at(\(key), \(at))").map { try $0.decode(String.self, "profile_id") })
    }

    /// The profiles each change row of `key` lists (nil: every profile), oldest first.
    func changeRows(_ key: String) async throws -> [[String]?] {
        try await db.query("""
            SELECT (SELECT array_agg(p ORDER BY p) FROM unnest(s.profile_ids) p)::text[] AS ids
            FROM engage.snapshot_changes s JOIN engage.computations c ON c.id = s.computation_id
            WHERE c.key = \(key) ORDER BY s.id
            """).map { try $0.decode([String]?.self, "ids") }
    }

    struct OutboxRow: Equatable {
        var profile: String?
        var veroID: String?
        var op: String
        var value: String
        var status: String
        var lockedBy: String?
    }

    /// The outbox rows of `key`, by profile then id.
    func outbox(_ key: String) async throws -> [OutboxRow] {
        try await db.query("""
            SELECT o.profile_id, o.vero_id, o.op, o.value::text AS value, o.status, o.locked_by
            FROM engage.outbox o JOIN engage.computations c ON c.id = o.computation_id
            WHERE c.key = \(key) ORDER BY o.profile_id, o.id
            """).map {
            OutboxRow(profile: try $0.decode(String?.self, "profile_id"), veroID: try $0.decode(String?.self, "vero_id"),
                      op: try $0.decode(String.self, "op"), value: try $0.decode(String.self, "value"),
                      status: try $0.decode(String.self, "status"), lockedBy: try $0.decode(String?.self, "locked_by"))
        }
    }

    /// Marks every pending row delivered and records it in the ledger, as a 2xx would.
    func confirmPending() async throws {
        try await db.query("""
            WITH d AS (UPDATE engage.outbox SET status = 'delivered', delivered_at = now(), attempts = 1
                       WHERE status = 'pending'
                       RETURNING id, destination_id, computation_id, profile_id, vero_id, email, value)
            INSERT INTO engage.ledger (destination_id, computation_id, vero_id, profile_id, email, value, confirmed_at, outbox_id)
            SELECT destination_id, computation_id, vero_id, profile_id, email, value, now(), id FROM d
            ON CONFLICT (destination_id, computation_id, vero_id) DO UPDATE
                SET value = EXCLUDED.value, profile_id = EXCLUDED.profile_id, confirmed_at = EXCLUDED.confirmed_at,
                    outbox_id = EXCLUDED.outbox_id
            """)
    }

    func count(_ sql: PostgresQuery) async throws -> Int {
        try await db.query(sql).first?.decode(Int.self, "n") ?? -1
    }
}
