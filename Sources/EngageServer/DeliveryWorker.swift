import AsyncHTTPClient
import EngageStore
import EngageSync
import Logging
import NIOConcurrencyHelpers
import PostgresClient
import ServiceLifecycle

/// Delivers every enabled, unpaused destination's due rows, one pass after another; waits a
/// tick when nothing was due. On graceful shutdown the pass under way stops claiming, finishes
/// and records its requests in flight, and releases the rest.
struct DeliveryWorker: Service {
    let pool: PostgresConnectionPool
    let client: HTTPClient
    let configuration: ServerConfiguration
    let logger: Logger

    func run() async throws {
        let current = NIOLockedValueBox<StopFlag?>(nil)
        let stopping = StopFlag()
        try await withGracefulShutdownHandler {
            while !stopping.isSet && !Task.isCancelled {
                var sent = 0
                do {
                    let destinations = try await pool.withConnection { try await DestinationRepository($0).deliveryTargets().active }
                    for destination in destinations {
                        // One flag per pass: a 401 stops its own pass only.
                        let stop = StopFlag()
                        current.withLockedValue { $0 = stop }
                        if stopping.isSet { break }
                        do {
                            let report = try await Deliverer(destination: destination, pool: pool, client: client,
                                                             options: configuration.delivery).run(stop: stop)
                            sent += report.requests
                            if report.requests > 0 || report.repeated > 0 {
                                logger.info("delivery to \(destination.name): \(report.summary)")
                            }
                        } catch {
                            logger.error("delivery to \(destination.name): \(error)")
                        }
                    }
                } catch {
                    logger.error("delivery: \(error)")
                }
                if sent == 0, !stopping.isSet {
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(configuration.tickSeconds)) }
                }
            }
        } onGracefulShutdown: {
            stopping.set()
            current.withLockedValue { $0?.set() }
        }
    }
}
