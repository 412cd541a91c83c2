import AsyncHTTPClient
import EngageSync
import Logging
import PostgresClient
import ServiceLifecycle

/// Every tick, runs what is due exactly as `engage-sync run --no-deliver` does (delivery is the
/// worker's): one ``SyncRunner`` run, up to `maxConcurrentRuns` pairs at once, a pair after
/// the pairs of the audiences its definition refers to (a SQL audience's snapshot must be
/// current). On graceful shutdown it starts no more pairs; those under way finish.
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
        var request = SyncRequest()
        request.noDeliver = true
        request.maxConcurrentRuns = configuration.maxConcurrentRuns
        var progress = SyncProgress()
        progress.stopStarting = { Task.isShuttingDownGracefully }
        report(try await SyncRunner(pool: pool, client: client).run(request, now: try configuration.now(), progress: progress))
    }

    private func report(_ outcomes: [PairOutcome]) {
        for o in outcomes where o.status == .failed || o.status == .blocked {
            logger.error("\(o.key) → \(o.destination): \(o.status.rawValue): \(o.message ?? "")")
        }
    }
}
