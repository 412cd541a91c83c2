import AsyncHTTPClient
import EngageCore
import EngageStore
import EngageSync
import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import PostgresClient
import ServiceLifecycle

/// How `serve` runs (DESIGN §18).
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8787
    /// How often the scheduler looks for due pairs, and delivery for rows to send.
    public var tickSeconds = 10.0
    /// How long a graceful shutdown may take before what is left is cancelled.
    public var shutdownTimeoutSeconds = 30.0
    public var delivery = DeliveryOptions(maxWaitSeconds: 0)
    /// The run's instant for each tick (`ENGAGE_SYNC_NOW` or the clock).
    public var now: @Sendable () throws -> Date = { Date() }

    public init() {}
}

/// `engage-sync serve`: one process that schedules runs, delivers, and answers `/healthz` and
/// `/metrics`, until SIGTERM or SIGINT (DESIGN §18). One connection pool and one HTTP client,
/// the caller's, serve every part. A graceful shutdown stops scheduling and claiming, lets the
/// requests in flight finish and be recorded, and releases the rows claimed but not sent.
public struct EngageServer: Sendable {
    public let pool: PostgresConnectionPool
    public let client: HTTPClient
    public let configuration: ServerConfiguration

    public init(pool: PostgresConnectionPool, client: HTTPClient, configuration: ServerConfiguration) {
        self.pool = pool
        self.client = client
        self.configuration = configuration
    }

    /// Serves until a signal; `onListening` is told the HTTP port once it is bound.
    public func run(onListening: @escaping @Sendable (Int) -> Void) async throws {
        let logger = Logger(label: "engage-sync.serve")
        let http = Application(router: Self.router(pool: pool),
                               configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                                    serverName: nil),
                               onServerRunning: { channel in onListening(channel.localAddress?.port ?? configuration.port) },
                               logger: logger)
        var group = ServiceGroupConfiguration(
            services: [http, Scheduler(pool: pool, client: client, configuration: configuration, logger: logger),
                       DeliveryWorker(pool: pool, client: client, configuration: configuration, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .milliseconds(Int64(configuration.shutdownTimeoutSeconds * 1000))
        try await ServiceGroup(configuration: group).run()
    }

    /// `GET /healthz`: 200 when PostgreSQL answers, else 503 with the reason. `GET /metrics`:
    /// the database-held gauges in Prometheus text.
    static func router(pool: PostgresConnectionPool) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/healthz") { _, _ -> Response in
            do {
                try await pool.withConnection { try await $0.query("SELECT 1") }
                return text(.ok, "ok\n")
            } catch {
                return text(.serviceUnavailable, "PostgreSQL is unreachable: \(error)\n")
            }
        }
        router.get("/metrics") { _, _ -> Response in
            do {
                let gauges = try await pool.withConnection { try await GaugeStore($0).gauges() }
                var response = text(.ok, PrometheusText.render(gauges))
                response.headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return response
            } catch {
                return text(.serviceUnavailable, "cannot read the metrics: \(error)\n")
            }
        }
        return router
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Every tick, runs the pairs that are due, as `engage-sync run --no-deliver` would (delivery
/// is the worker's). Stops scheduling on graceful shutdown; a run under way finishes.
struct Scheduler: Service {
    let pool: PostgresConnectionPool
    let client: HTTPClient
    let configuration: ServerConfiguration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                var request = SyncRequest()
                request.noDeliver = true
                let outcomes = try await SyncRunner(pool: pool, client: client).run(request, now: try configuration.now())
                for o in outcomes where o.status == .failed || o.status == .blocked {
                    logger.error("\(o.key) → \(o.destination): \(o.status.rawValue): \(o.message ?? "")")
                }
            } catch {
                logger.error("scheduler: \(error)")
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(configuration.tickSeconds)) }
        }
    }
}

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
                    let destinations = try await pool.withConnection { try await DestinationRepository($0).all() }
                    for destination in destinations where destination.enabled && destination.pausedReason == nil {
                        // One flag per pass: a 401 stops its own pass only.
                        let stop = StopFlag()
                        current.withLockedValue { $0 = stop }
                        if stopping.isSet { break }
                        do {
                            let report = try await Deliverer(destination: destination, pool: pool, client: client,
                                                             options: configuration.delivery).run(stop: stop)
                            sent += report.requests
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
