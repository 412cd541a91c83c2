import AsyncHTTPClient
import EngageCore
import EngageStore
import Foundation
import PostgresClient

/// What `run`, `resync` and `remove` are asked to do.
public struct SyncRequest: Sendable {
    /// Only these definitions (empty: every enabled one). Naming keys runs them now, whatever the schedule.
    public var keys: [String] = []
    /// Only this destination.
    public var destination: String?
    /// Ignore the schedule.
    public var all = false
    /// Print what would change; write nothing.
    public var dryRun = false
    /// Enqueue only; a later `deliver` sends.
    public var noDeliver = false
    /// Let a run the guardrail would block go through.
    public var force = false
    /// `resync` or `remove` instead of full/incremental.
    public var mode: RunMode?
    /// Evaluate every profile instead of the changed ones (`run --full`).
    public var fullEvaluation = false
    /// Count rows skipped for want of a Vero user id as undelivered: the run is `partial`. By
    /// default they are an expected outcome (listed in `engage.delivery_failures`) and the run
    /// `succeeded` with its skipped count.
    public var strict = false
    /// Pairs planned at once, each on a connection of its own (`serve --max-concurrent-runs`);
    /// a pair waits for the pairs of the audiences its definition refers to.
    public var maxConcurrentRuns = 1
    public var delivery = DeliveryOptions()
    /// `keys` may name disabled definitions (``SyncRunner/plan(keys:on:now:)``).
    var plansDisabled = false

    public init() {}
}

/// The outcome of one (definition, destination) pair.
public struct PairOutcome: Sendable {
    public enum Status: String, Sendable {
        case succeeded, partial, failed, blocked
        /// Another process was running this pair.
        case skipped
        /// `--dry-run`.
        case planned

        /// The status recorded in `engage.sync_runs` (a dry run records nothing).
        var runStatus: RunStatus {
            switch self {
            case .succeeded: .succeeded
            case .partial: .partial
            case .failed: .failed
            case .blocked: .blocked
            case .skipped: .skipped
            case .planned: .running
            }
        }
    }

    public var key: String
    public var destination: String
    public var runID: Int?
    public var mode: RunMode
    public var status: Status
    public var counts = RunCounts()
    public var delivered = 0
    public var failed = 0
    public var pending = 0
    public var examples: [PlannedChange] = []
    /// How the definition was evaluated.
    public var evaluation: EvaluationOutcome?
    public var message: String?
    public var timings = (evaluate: 0.0, diff: 0.0, deliver: 0.0)
}

/// What a caller is told as a run goes, for a progress display.
public struct SyncProgress: Sendable {
    /// After each pair is evaluated, diffed and enqueued: pairs done, pairs in all, its key.
    public var planned: @Sendable (_ done: Int, _ total: Int, _ key: String) -> Void = { _, _, _ in }
    /// Before delivering to a destination: what to call with that pass's reports, if anything.
    public var delivering: @Sendable (Destination) async -> (@Sendable (DeliveryReport) -> Void)? = { _ in nil }
    /// After delivering to a destination (whatever the outcome).
    public var delivered: @Sendable (Destination) -> Void = { _ in }
    /// Asked before each pair starts: true leaves the pairs not started for the next run
    /// (`serve` stopping gracefully). The pairs started are finished and recorded.
    public var stopStarting: @Sendable () -> Bool = { false }

    public init() {}
}

/// Runs syncs (docs/architecture.md#how-syncs-behave): picks the due (definition, destination)
/// pairs, evaluates and diffs
/// each inside PostgreSQL under a per-pair advisory lock, commits the outbox rows, delivers, and
/// records every run in `engage.sync_runs`.
public struct SyncRunner: Sendable {
    public let pool: PostgresConnectionPool
    public let client: HTTPClient

    /// `pool` gives the connections (one for the run, two more while delivering); `client`
    /// sends. Both belong to the caller, who closes them.
    public init(pool: PostgresConnectionPool, client: HTTPClient) {
        self.pool = pool
        self.client = client
    }

    public func run(_ request: SyncRequest, now: Date = Date(), progress: SyncProgress = SyncProgress())
        async throws -> [PairOutcome] {
        // One connection for the whole run: it holds the pair locks, which the pool's reset
        // (or closing it, after an error) releases whatever happens.
        try await pool.withConnection { db in
            try await run(request, db: db, now: now, progress: progress)
        }
    }

    /// What `run KEYS --dry-run` would do at `now`, on `db` — inside the caller's transaction,
    /// so it sees what that transaction stored (`define --plan` saves the definitions there,
    /// plans, and rolls back). Naming an audience plans the definitions built on it too.
    public func plan(keys: [String], on db: PostgresConnection, now: Date) async throws -> [PairOutcome] {
        var request = SyncRequest()
        request.keys = keys
        request.dryRun = true
        request.plansDisabled = true
        return try await run(request, db: db, now: now, progress: SyncProgress())
    }

    /// `remove KEY`: tombstones the definition, then (unless `keepValues`) tells every
    /// destination that holds `true` (or a trait value) for a profile that it no longer does.
    public func remove(key: String, keepValues: Bool, delivery: DeliveryOptions, now: Date = Date()) async throws -> [PairOutcome] {
        _ = try await pool.withConnection { try await DefinitionRepository($0).remove(key: key) }
        if keepValues { return [] }
        var request = SyncRequest()
        request.keys = [key]
        request.mode = .remove
        request.delivery = delivery
        return try await run(request, now: now)
    }

    private func run(_ request: SyncRequest, db: PostgresConnection, now: Date,
                     progress: SyncProgress) async throws -> [PairOutcome] {
        let pairs = try await selectPairs(request, db: db, now: now)
        // A lane is a connection that plans pairs and holds their locks until they are recorded.
        let lanes = min(max(1, request.maxConcurrentRuns), max(1, pairs.count))
        let outcomes = try await pool.withConnections(lanes - 1) { more in
            try await run(pairs, lanes: [db] + more, request: request, now: now, progress: progress)
        }
        // Stored definitions that no longer parse, after the pairs.
        return outcomes + (try await unreadable(request, db: db))
    }

    /// A pair planned in phase 1, and the lane whose connection holds its lock (nil: skipped).
    private struct Planned {
        var pair: Pair
        var outcome: PairOutcome
        var lane: Int?
    }

    private func run(_ pairs: [Pair], lanes: [PostgresConnection], request: SyncRequest, now: Date,
                     progress: SyncProgress) async throws -> [PairOutcome] {
        let db = lanes[0]
        // Phase 1: evaluate, diff and enqueue each pair, each in its own transaction.
        var planned = lanes.count == 1
            ? try await planInTurn(pairs, request: request, db: db, now: now, progress: progress)
            : try await planSideBySide(pairs, lanes: lanes, request: request, now: now, progress: progress)
        // A first sync, resync or redefinition filled a snapshot the planner's statistics do not
        // know: the next incremental run would plan its reads of it as if it were empty.
        if !request.dryRun, planned.contains(where: {
            $0.outcome.status == .succeeded && $0.outcome.evaluation.map(SnapshotStatistics.outdated) == true
        }) {
            try await SnapshotStatistics.refresh(db)
        }
        // Phase 2: deliver each destination once (its rows from every pair, and any left over).
        if !request.dryRun && !request.noDeliver {
            var delivered: Set<Int> = []
            for p in planned where p.outcome.runID != nil && !delivered.contains(p.pair.destination.id) {
                let destination = p.pair.destination
                delivered.insert(destination.id)
                let started = ContinuousClock.now
                Log.sync.debug("delivering to \(destination.name) at \(destination.baseURL)")
                var failure: String?
                do {
                    _ = try await Deliverer(destination: destination, pool: pool, client: client,
                                            options: request.delivery).run(progress: await progress.delivering(destination))
                } catch {
                    failure = "\(error)"
                }
                progress.delivered(destination)
                let seconds = (ContinuousClock.now - started).seconds
                for i in planned.indices where planned[i].pair.destination.id == destination.id && planned[i].outcome.runID != nil {
                    planned[i].outcome.timings.deliver = seconds
                    if let failure {
                        planned[i].outcome.status = .failed
                        planned[i].outcome.message = failure
                    }
                }
            }
        }
        // Phase 3: record how each run ended, then let go of its pair.
        let pairStore = PairStore(db), runs = SyncRunStore(db)
        for i in planned.indices {
            guard let runID = planned[i].outcome.runID, planned[i].outcome.status != .blocked else { continue }
            let rows = try await pairStore.rowOutcome(runID: runID)
            planned[i].outcome.delivered = rows.delivered
            planned[i].outcome.failed = rows.failed
            planned[i].outcome.pending = rows.pending
            if planned[i].outcome.status != .failed {
                // Pending rows without an error are on their way (another worker holds them, or
                // --no-deliver); only failures and rows waiting for a retry make it partial, and
                // skips (no Vero user id) with --strict.
                let clean = rows.failed == 0 && rows.retrying == 0 && (!request.strict || rows.skipped == 0)
                planned[i].outcome.status = clean ? .succeeded : .partial
            }
            try await runs.finish(id: runID, status: planned[i].outcome.status.runStatus,
                                  deliverMs: request.noDeliver ? nil : planned[i].outcome.timings.deliver * 1000,
                                  error: planned[i].outcome.message)
        }
        for p in planned {
            guard let lane = p.lane else { continue }
            try await PairStore(lanes[lane]).unlock(computationID: p.pair.computationID, destinationID: p.pair.destination.id)
        }
        if !request.dryRun, planned.contains(where: { $0.lane != nil }) { try await ChangeLog(db).prune() }
        let outcomes = planned.map(\.outcome)
        outcomes.forEach(SyncMetrics.record)
        return outcomes
    }

    /// Phase 1 on one connection, pair after pair (in dependency order), reading the changed
    /// profiles once for every due definition (``SharedChanges``, a copy in this session).
    private func planInTurn(_ pairs: [Pair], request: SyncRequest, db: PostgresConnection, now: Date,
                            progress: SyncProgress) async throws -> [Planned] {
        let shared = request.dryRun || request.fullEvaluation || request.mode != nil ? nil
            : try await SharedChanges.prepare(computationIDs: Set(pairs.map(\.computationID)), db)
        var planned: [Planned] = []
        for pair in pairs {
            if progress.stopStarting() { break }
            let outcome = try await plan(pair, request: request, shared: shared, db: db, now: now)
            planned.append(Planned(pair: pair, outcome: outcome, lane: outcome.status == .skipped ? nil : 0))
            progress.planned(planned.count, pairs.count, pair.definition.key)
        }
        if shared != nil { try await SharedChanges.drop(db) }
        return planned
    }

    /// Phase 1 on several connections at once: a pair starts on a free lane once every pair of
    /// the audiences its definition refers to is planned (a SQL audience's snapshot must be
    /// current). No shared copy: it would live in one session.
    private func planSideBySide(_ pairs: [Pair], lanes: [PostgresConnection], request: SyncRequest, now: Date,
                                progress: SyncProgress) async throws -> [Planned] {
        var planned: [Int: Planned] = [:]
        var started: Set<Int> = []
        var free = Array(lanes.indices)
        try await withThrowingTaskGroup(of: (Int, Int, PairOutcome).self) { group in
            func start(_ i: Int) {
                let lane = free.removeLast(), pair = pairs[i], db = lanes[lane]
                started.insert(i)
                group.addTask { (i, lane, try await plan(pair, request: request, shared: nil, db: db, now: now)) }
            }
            func startReady() {
                for i in pairs.indices where !started.contains(i) && !free.isEmpty && !progress.stopStarting() {
                    let references = pairs[i].definition.referencedAudiences
                    let waits = pairs.indices.contains { j in
                        planned[j] == nil && pairs[j].definition.key != pairs[i].definition.key
                            && references.contains(pairs[j].definition.key)
                    }
                    if !waits { start(i) }
                }
                // A cycle cannot be stored; should one be read, never stall on it.
                if started.count == planned.count, !progress.stopStarting(),
                   let first = pairs.indices.first(where: { !started.contains($0) }) {
                    start(first)
                }
            }
            startReady()
            while let (i, lane, outcome) = try await group.next() {
                planned[i] = Planned(pair: pairs[i], outcome: outcome, lane: outcome.status == .skipped ? nil : lane)
                free.append(lane)
                progress.planned(planned.count, pairs.count, pairs[i].definition.key)
                startReady()
            }
        }
        return planned.sorted { $0.key < $1.key }.map(\.value)
    }

    /// A failed outcome (destination `*`) for each stored definition `request` selects that no
    /// longer parses: it fails alone, named, and the other pairs run.
    private func unreadable(_ request: SyncRequest, db: PostgresConnection) async throws -> [PairOutcome] {
        guard request.mode != .remove else { return [] }
        return try await DefinitionRepository(db).read().unreadable
            .filter { request.keys.isEmpty || request.keys.contains($0.key) }
            .map { broken in
                var outcome = PairOutcome(key: broken.key, destination: "*", mode: request.mode ?? .incremental, status: .failed)
                outcome.message = broken.description
                return outcome
            }
    }

    struct Pair {
        var computationID: Int
        var definition: Definition
        var destination: Destination
    }

    /// The pairs to run: selected by key and destination, and due unless keys or `all` were given.
    private func selectPairs(_ request: SyncRequest, db: PostgresConnection, now: Date) async throws -> [Pair] {
        let (stored, unreadable) = try await DefinitionRepository(db).read(includeRemoved: request.mode == .remove)
        var definitions = DefinitionGraph.dependencyOrder(
            stored.filter { request.mode == .remove ? $0.removedAt != nil : $0.definition.enabled }, definition: \.definition)
        // A definition evaluated under another document than today's, its own or an audience's
        // it is built on, is due now; naming an audience also runs those built on it.
        let audiences = Dictionary(stored.filter { $0.removedAt == nil && $0.definition.kind == .audience }
            .map { ($0.definition.key, $0.definition) }, uniquingKeysWith: { a, _ in a })
        let evaluated = try await PairStore(db).evaluatedDocuments()
        var redefined: Set<Int> = []
        var builtOn: [Int: JSONValue] = [:]
        for d in definitions {
            let document = DefinitionGraph.evaluatedDocument(d.definition, audiences: audiences)
            builtOn[d.id] = document["audiences"]
            if let last = evaluated[d.id], last != document { redefined.insert(d.id) }
        }
        if !request.keys.isEmpty {
            // A plan may name a definition it disabled: nothing of its own runs, but those built on
            // it are planned.
            let known = request.plansDisabled ? stored.filter { $0.removedAt == nil }.map(\.definition.key)
                : definitions.map(\.definition.key)
            for key in request.keys where !known.contains(key) && !unreadable.contains(where: { $0.key == key }) {
                throw UnknownKey(key: key)
            }
            definitions = definitions.filter { d in
                request.keys.contains(d.definition.key)
                    || redefined.contains(d.id) && request.keys.contains { builtOn[d.id]?[$0] != nil }
            }
        }
        // A paused destination's pairs still enqueue; its delivery reports the pause.
        let targets = try await DestinationRepository(db).deliveryTargets(only: request.destination)
        let destinations = (targets.active + targets.paused).sorted { $0.name < $1.name }
        let pairStore = PairStore(db)
        let ignoreSchedule = request.all || !request.keys.isEmpty || request.mode != nil
        var pairs: [Pair] = []
        for stored in definitions {
            for destination in destinations {
                if let wanted = stored.definition.destinations, !wanted.contains(destination.name) { continue }
                if !ignoreSchedule, !redefined.contains(stored.id),
                   let due = try await pairStore.nextDue(computationID: stored.id, destinationID: destination.id), now < due {
                    continue
                }
                pairs.append(Pair(computationID: stored.id, definition: stored.definition, destination: destination))
            }
        }
        return pairs
    }

    /// Phase 1 for one pair: lock, then the diff engine's one transaction (evaluate, diff,
    /// guardrail, supersede, enqueue, snapshot).
    private func plan(_ pair: Pair, request: SyncRequest, shared: SharedChanges?, db: PostgresConnection, now: Date)
        async throws -> PairOutcome {
        let pairStore = PairStore(db), runs = SyncRunStore(db)
        var outcome = PairOutcome(key: pair.definition.key, destination: pair.destination.name, mode: request.mode ?? .incremental,
                                  status: .planned)
        guard try await pairStore.tryLock(computationID: pair.computationID, destinationID: pair.destination.id) else {
            outcome.status = .skipped
            outcome.message = "another process is running this pair; skipped"
            if !request.dryRun {
                let id = try await runs.start(computationID: pair.computationID, destinationID: pair.destination.id,
                                              mode: outcome.mode, status: .skipped)
                try await runs.finish(id: id, status: .skipped, error: outcome.message)
            }
            return outcome
        }
        try await pairStore.failStaleRuns(computationID: pair.computationID, destinationID: pair.destination.id)
        if request.mode == nil {
            let last = try await pairStore.lastSuccessfulRun(computationID: pair.computationID, destinationID: pair.destination.id)
            outcome.mode = last == nil ? .full : .incremental
        }
        let runID = request.dryRun ? nil : try await runs.start(computationID: pair.computationID, destinationID: pair.destination.id,
                                                                mode: outcome.mode, instant: now)
        outcome.runID = runID
        let engine = DiffEngine(computationID: pair.computationID, definition: pair.definition, destination: pair.destination)
        let guards = outcome.mode == .incremental && !request.force && pair.definition.kind == .audience
        var diff = DiffRequest(mode: outcome.mode, runID: runID, runAt: now,
                               guardrail: guards ? Guardrail(maxExitRatio: pair.destination.maxExitRatio) : nil,
                               dryRun: request.dryRun)
        diff.fullEvaluation = request.fullEvaluation
        diff.shared = shared
        diff.sql = (SQLSource(conninfo: pool.conninfo), pool)
        let result: DiffOutcome
        do {
            diff.audiences = try await DefinitionRepository(db).audiences()
            result = try await engine.run(diff, on: db)
        } catch let error as PostgresError where error.kind == .connection {
            // The run's connection is gone: no other pair can go on over it.
            if let runID { try? await runs.finish(id: runID, status: .failed, error: "\(error)") }
            throw error
        } catch {
            // Any other failure of this pair (a SQL definition's query or contract, a value
            // PostgreSQL refuses, a cancelled statement): this pair fails with its message,
            // nothing of it is enqueued (its transaction rolled back), and the other pairs go on.
            Log.sync.error("\(pair.definition.key) → \(pair.destination.name): \(error)")
            outcome.status = .failed
            outcome.message = "\(error)"
            if let runID { try await runs.finish(id: runID, status: .failed, error: outcome.message) }
            return outcome
        }
        outcome.counts = result.counts
        outcome.examples = result.examples
        outcome.timings.evaluate = result.evaluateSeconds
        outcome.timings.diff = result.diffSeconds
        outcome.evaluation = result.evaluation
        if let blocked = result.blocked {
            outcome.status = .blocked
            outcome.message = blocked
            if let runID { try await runs.finish(id: runID, status: .blocked, counts: outcome.counts, error: blocked) }
            return outcome
        }
        if request.dryRun { return outcome }
        if let runID {
            try await runs.finish(id: runID, status: .running, counts: outcome.counts, evaluation: result.evaluation,
                                  evaluateMs: outcome.timings.evaluate * 1000, diffMs: outcome.timings.diff * 1000)
        }
        let e = result.evaluation
        if let drift = e.drift, drift > 0 {
            Log.sync.warning("\(pair.definition.key): the incremental snapshot differed from a full evaluation for \(drift) profiles; corrected")
        }
        Log.sync.info("\(pair.definition.key) → \(pair.destination.name): \(outcome.mode) run \(outcome.runID.map(String.init) ?? "-"), \(e.kind.rawValue) evaluation\(e.fullBecause.map { " (\($0))" } ?? "") of \(e.affected) profiles, \(e.changed) changed; \(result.fullDiff ? "full" : "incremental") diff enqueued +\(outcome.counts.entered) −\(outcome.counts.exited) ~\(outcome.counts.changed) (evaluate \(Int(outcome.timings.evaluate * 1000)) ms, diff \(Int(outcome.timings.diff * 1000)) ms)")
        outcome.status = .succeeded
        return outcome
    }
}
