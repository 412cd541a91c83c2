import AsyncHTTPClient
import EngageCore
import EngageStore
import Foundation
import NIOConcurrencyHelpers
import PostgresClient
import VeroClient

/// Sends a destination's pending outbox rows (docs/architecture.md#how-syncs-behave): claim a batch
/// with a lease, map each
/// Segment call to Vero requests, send with bounded concurrency and a token-bucket rate,
/// record the results (and advance the ledger) by group commit. Claiming the next batch
/// overlaps with sending.
public struct Deliverer: Sendable {
    public let destination: Destination
    public let pool: PostgresConnectionPool
    public let client: HTTPClient
    public let options: DeliveryOptions
    public let worker: String

    /// `pool` gives the two connections a pass uses (claiming and recording); `client` sends.
    public init(destination: Destination, pool: PostgresConnectionPool, client: HTTPClient,
                options: DeliveryOptions = DeliveryOptions()) {
        self.destination = destination
        self.pool = pool
        self.client = client
        self.options = options
        self.worker = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(UUID().uuidString.prefix(8))"
    }

    /// The token, from the environment variable the destination names.
    public static func token(for destination: Destination) throws -> Secret {
        guard let token = Secret(environment: destination.tokenEnv, ProcessInfo.processInfo.environment) else {
            throw MissingToken(destination: destination.name, variable: destination.tokenEnv)
        }
        return token
    }

    /// Delivers until nothing is due (waiting for retries due within `maxWaitSeconds`).
    /// Throws ``DestinationPaused`` without claiming anything when the destination is paused,
    /// and ``CredentialsRejected`` after recording what was done (and pausing the destination)
    /// when Vero says 401/403. Setting `stop` ends the pass early (`serve`'s graceful shutdown).
    public func run(progress: (@Sendable (DeliveryReport) -> Void)? = nil, stop: StopFlag = StopFlag()) async throws -> DeliveryReport {
        let token = try Self.token(for: destination)
        let transport = VeroTransport(client: client, endpoint: VeroEndpoint(
            baseURL: destination.baseURL, token: token, requestTimeout: .seconds(options.requestTimeoutSeconds)))
        let bucket = TokenBucket(rate: destination.rate)
        return try await pool.withConnections(2) { db in
            // As stored now: another process may have paused it since this one read it.
            if let reason = try await DestinationRepository(db[0]).find(name: destination.name).pausedReason {
                throw DestinationPaused(destination: destination.name, reason: reason)
            }
            do {
                return try await run(claims: OutboxStore(db[0]), records: OutboxStore(db[1]), transport: transport,
                                     bucket: bucket, progress: progress, stop: stop)
            } catch let rejected as CredentialsRejected {
                try await DestinationRepository(db[0]).pause(
                    id: destination.id, reason: "HTTP \(rejected.status) from Vero: the auth token was rejected")
                Log.delivery.error("\(rejected)")
                throw rejected
            }
        }
    }

    private func run(claims: OutboxStore, records: OutboxStore, transport: VeroTransport, bucket: TokenBucket,
                     progress: (@Sendable (DeliveryReport) -> Void)?, stop: StopFlag) async throws -> DeliveryReport {
        // The leases of what this worker holds are renewed beside the work, on the recording
        // connection (one short statement at a time, between the recorder's).
        let keeper = LeaseKeeper(leaseSeconds: options.leaseSeconds, worker: worker)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await keeper.keepAlive(records) }
            defer { group.cancelAll() }
            return try await deliver(claims: claims, records: records, keeper: keeper, transport: transport,
                                     bucket: bucket, progress: progress, stop: stop)
        }
    }

    private func deliver(claims: OutboxStore, records: OutboxStore, keeper: LeaseKeeper, transport: VeroTransport,
                         bucket: TokenBucket, progress: (@Sendable (DeliveryReport) -> Void)?,
                         stop: StopFlag) async throws -> DeliveryReport {
        let started = ContinuousClock.now
        var report = DeliveryReport()
        let leaseSeconds = keeper.leaseSeconds

        let backlogs = BacklogStore(claims.db)
        let lease = DiffEngine.Lease(seconds: leaseSeconds, worker: worker)
        // How many rows to take at once: what this worker sends in half a lease at the rate it
        // observed (one row per lane until it has observed a batch), within [concurrency, batch
        // size]. Members expanded from a backlog per transaction: up to four batches, to spread
        // its fixed cost (temporary tables, the backlog row), within the same half lease. The
        // renewals keep what is held alive; the bound keeps a crashed worker's share small and
        // lets other workers share the outbox.
        let lanes = max(1, min(destination.concurrency, options.batchSize))
        let throughput = NIOLockedValueBox<Double?>(nil)
        func sizes() -> (claim: Int, expansion: Int) {
            guard let rate = throughput.withLockedValue({ $0 }) else { return (lanes, lanes) }
            let perHalfLease = Int(min(Double(4 * options.batchSize), min(rate, destination.rate) * leaseSeconds / 2))
            let claim = max(lanes, min(options.batchSize, perHalfLease))
            return (claim, max(claim, perHalfLease))
        }
        // Rows due now first (retries, other runs' changes); then rows this worker expanded from
        // a backlog and holds leased (`ahead`), expanding more when they run short. A stretch of
        // members whose value the destination already holds enqueues nothing: keep expanding
        // until there is something to send or the backlogs are done.
        // Until nothing is due, the pass takes the rows due when it began: the retries it
        // schedules itself wait for its wait for retries (`maxWaitSeconds`) or the next pass.
        var horizon: Date? = try await claims.now()
        func claim(_ ahead: [Int], dueBy: Date?) async throws -> (rows: [ClaimedRow], ahead: [Int]) {
            let (limit, expansion) = sizes()
            let claimed = ContinuousClock.now
            var rows = try await claims.claim(destinationID: destination.id, limit: limit,
                                              leaseSeconds: leaseSeconds, worker: worker, dueBy: dueBy)
            keeper.hold(rows.map(\.id), since: claimed)
            var ahead = ahead
            while rows.count + ahead.count < limit {
                let expanding = ContinuousClock.now
                let expanded = try await backlogs.expand(for: destination, limit: expansion, lease: lease)
                keeper.hold(expanded.leased, since: expanding)
                ahead += expanded.leased
                if expanded.covered == 0 { break }
            }
            let take = min(ahead.count, limit - rows.count)
            // Enqueued already leased to this worker: no claim to write.
            rows += try await claims.leased(ids: Array(ahead.prefix(take)))
            return (rows, Array(ahead.dropFirst(take)))
        }
        let recorder = Recorder(store: records, maxAttempts: destination.maxAttempts, worker: worker)
        var (batch, ahead) = try await claim([], dueBy: horizon)
        while true {
            if batch.isEmpty {
                if stop.isSet { break }
                // Nothing due now: wait for a retry that is due soon, else stop.
                guard options.maxWaitSeconds > 0, let due = try await claims.nextDue(destinationID: destination.id) else { break }
                let wait = due.timeIntervalSinceNow
                guard wait <= options.maxWaitSeconds else { break }
                if wait > 0 { try await Task.sleep(for: .seconds(min(wait + 0.01, options.maxWaitSeconds))) }
                horizon = nil
                (batch, ahead) = try await claim(ahead, dueBy: nil)
                continue
            }
            let current = batch, carried = ahead, dueBy = horizon
            Log.delivery.debug("\(destination.name): claimed \(current.count) rows")
            async let next: (rows: [ClaimedRow], ahead: [Int]) = stop.isSet ? ([], carried) : claim(carried, dueBy: dueBy)
            let sending = ContinuousClock.now
            let (requests, credentials) = await send(current, transport: transport, bucket: bucket, stop: stop,
                                                     recorder: recorder, keeper: keeper)
            let took = (ContinuousClock.now - sending).seconds
            if took > 0 { throughput.withLockedValue { $0 = Double(current.count) / took } }
            report.requests += requests
            if let credentials {
                stop.set()
                report.credentialsStatus = credentials
            }
            report.add(try await recorder.drain())
            (batch, ahead) = try await next
            if stop.isSet, !(batch.isEmpty && ahead.isEmpty) {
                // Give back rows claimed or expanded while we were stopping.
                let released = batch.map(\.id) + ahead
                report.add(try await records.record(released.map { DeliveryResult(id: $0, kind: .released) },
                                                    maxAttempts: destination.maxAttempts, worker: worker))
                batch = []
                ahead = []
            }
            report.seconds = (ContinuousClock.now - started).seconds
            progress?(report)
        }
        report.seconds = (ContinuousClock.now - started).seconds
        if report.repeated > 0 {
            Log.delivery.warning("\(destination.name): \(report.repeated) rows were sent after another worker had taken their lease")
        }
        SyncMetrics.record(report, destination: destination.name)
        if let status = report.credentialsStatus {
            throw CredentialsRejected(destination: destination.name, status: status)
        }
        return report
    }

    /// Sends a batch with at most `concurrency` rows in flight. Rows about the same user go
    /// through one worker in claim order, so a user's calls (identify, track, then alias)
    /// reach Vero in the order they were enqueued. Each result is recorded before its worker sends again.
    /// Returns the number of HTTP requests made, and the status when Vero refused the token.
    private func send(_ rows: [ClaimedRow], transport: VeroTransport, bucket: TokenBucket,
                      stop: StopFlag, recorder: Recorder, keeper: LeaseKeeper) async -> (requests: Int, credentialsStatus: Int?) {
        let groups = Self.groupByUser(rows)
        let next = NIOLockedValueBox(0)
        let requests = NIOLockedValueBox(0)
        let credentials = NIOLockedValueBox<Int?>(nil)
        let width = max(1, min(destination.concurrency, groups.count))
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<width {
                group.addTask {
                    while true {
                        let index = next.withLockedValue { i -> Int in defer { i += 1 }; return i }
                        guard index < groups.count else { break }
                        for (row, message) in groups[index] {
                            if stop.isSet {
                                await recorder.enqueue(DeliveryResult(id: row.id, kind: .released))
                                keeper.drop(row.id)
                                continue
                            }
                            let (result, sent) = await deliver(row, message, transport: transport, bucket: bucket, keeper: keeper)
                            requests.withLockedValue { $0 += sent }
                            if result.kind == .credentials {
                                stop.set()
                                credentials.withLockedValue { $0 = $0 ?? result.statusCode }
                            }
                            // Sending again waits for this result to be committed (see Recorder).
                            do { try await recorder.record(result) } catch { stop.set() }
                            keeper.drop(row.id)
                        }
                    }
                }
            }
        }
        return (requests.withLockedValue { $0 }, credentials.withLockedValue { $0 })
    }

    /// Decodes each row's message and groups rows by the user they are about (for an alias,
    /// the previous id), keeping claim order inside a group and across first appearances.
    static func groupByUser(_ rows: [ClaimedRow]) -> [[(ClaimedRow, Result<SegmentMessage, Error>)]] {
        var groups: [[(ClaimedRow, Result<SegmentMessage, Error>)]] = []
        var index: [String: Int] = [:]
        for row in rows {
            let decoded = Result { try row.message() }
            let message = try? decoded.get()
            let key = message.flatMap { $0.type == .alias ? ($0.previousId ?? $0.userId) : ($0.userId ?? $0.anonymousId) }
            if let key, let i = index[key] {
                groups[i].append((row, decoded))
            } else {
                if let key { index[key] = groups.count }
                groups.append([(row, decoded)])
            }
        }
        return groups
    }

    /// One row: map, send the main request, then the tags edit only if the main one succeeded.
    private func deliver(_ row: ClaimedRow, _ decoded: Result<SegmentMessage, Error>, transport: VeroTransport,
                         bucket: TokenBucket, keeper: LeaseKeeper) async -> (DeliveryResult, Int) {
        let message: SegmentMessage
        do {
            message = try decoded.get()
        } catch {
            return (DeliveryResult(id: row.id, kind: .rejected, error: VeroRejection(code: .invalidMessage, detail: "\(error)").description), 0)
        }
        let requests: [VeroRequest]
        switch VeroMapper.map(message) {
        case .success(let mapped): requests = mapped
        case .failure(let rejection): return (DeliveryResult(id: row.id, kind: .rejected, error: rejection.description), 0)
        }
        let recorded = JSONValue.array(requests.map { request in
            .object(["method": .string(request.method.rawValue), "path": .string(request.path), "body": .object(request.body)])
        })
        var sent = 0
        var last: VeroResponse?
        for request in requests {
            do { try await bucket.acquire() } catch {
                return (DeliveryResult(id: row.id, kind: .released), sent)
            }
            // Never send a row this worker no longer holds, or whose renewals have fallen
            // behind (less than half a lease left): give it back instead.
            if sent == 0, !keeper.canSend(row.id) {
                Log.delivery.debug("outbox=\(row.id): not sent, its lease is no longer held long enough")
                return (DeliveryResult(id: row.id, kind: .released), 0)
            }
            let started = ContinuousClock.now
            let response = await transport.send(request, checkEvery: keeper.checkEvery) { keeper.runningOut(row.id) }
            SyncMetrics.request(ContinuousClock.now - started, destination: destination.name)
            sent += 1
            last = response
            Log.delivery.debug("\(request.method.rawValue) \(request.path) outbox=\(row.id) → \(response.status.map(String.init) ?? "no response") in \(Int((ContinuousClock.now - started).seconds * 1000)) ms")
            Log.delivery.trace("body (without the token): \(JSONValue.object(request.body).jsonString)")
            guard response.classification == .success else { break }
        }
        guard let response = last else { return (DeliveryResult(id: row.id, kind: .released), sent) }
        let base = DeliveryResult(id: row.id, kind: .delivered, statusCode: response.status, request: recorded)
        switch response.classification {
        case .success:
            return (base, sent)
        case .retryable:
            var result = base
            result.kind = .retry
            result.error = response.status.map { "HTTP \($0): \(response.detail)" } ?? response.detail
            result.delay = options.retry.delay(afterAttempt: row.attempts + 1, retryAfter: response.retryAfter)
            return (result, sent)
        case .credentials:
            var result = base
            result.kind = .credentials
            result.error = "HTTP \(response.status ?? 0): credentials rejected"
            return (result, sent)
        case .permanent:
            var result = base
            result.kind = .failed
            result.error = "HTTP \(response.status ?? 0): \(response.detail)"
            return (result, sent)
        }
    }
}
