import AsyncHTTPClient
import EngageSync
import Logging
import PostgresClient
import ServiceLifecycle

/// Every tick, runs the pairs that are due, as `engage-sync run --no-deliver` would (delivery
/// is the worker's): at most `maxConcurrentRuns` at once, and a pair only once the pairs of the
/// audiences its definition refers to have run (a SQL audience's snapshot must be current).
/// Stops scheduling on graceful shutdown; runs under way finish.
struct Scheduler: Service {
    let pool: PostgresConnectionPool
    let client: HTTPClient
    let configuration: ServerConfiguration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do { try await tick() } catch { logger.error("scheduler: \(error)") }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(configuration.tickSeconds)) }
        }
    }

    private func tick() async throws {
        let runner = SyncRunner(pool: pool, client: client)
        let now = try configuration.now()
        var request = SyncRequest()
        request.noDeliver = true
        if configuration.maxConcurrentRuns <= 1 {
            report(try await runner.run(request, now: now))
            return
        }
        report(try await runner.unreadable(request))
        var waiting = try await runner.duePairs(request, now: now)
        while !waiting.isEmpty && !Task.isShuttingDownGracefully {
            // A wave: the pairs none of whose referenced audiences still has a pair waiting.
            let pending = Set(waiting.map(\.pair.key))
            let wave = waiting.filter { due in due.references.allSatisfy { !pending.contains($0) || $0 == due.pair.key } }
            let ready = wave.isEmpty ? waiting : wave // a cycle cannot be stored; never stall on one
            waiting.removeAll { due in ready.contains { $0.pair == due.pair } }
            try await withThrowingTaskGroup(of: [PairOutcome].self) { group in
                var next = ready.makeIterator()
                func start() {
                    guard let due = next.next() else { return }
                    var one = request
                    one.pairs = [due.pair]
                    group.addTask { try await runner.run(one, now: now) }
                }
                for _ in 0..<configuration.maxConcurrentRuns { start() }
                while let outcomes = try await group.next() {
                    report(outcomes)
                    start()
                }
            }
        }
    }

    private func report(_ outcomes: [PairOutcome]) {
        for o in outcomes where o.status == .failed || o.status == .blocked {
            logger.error("\(o.key) → \(o.destination): \(o.status.rawValue): \(o.message ?? "")")
        }
    }
}
