import AsyncHTTPClient
import EngageCore
import EngageStore
import EngageSync
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOConcurrencyHelpers
import PostgresClient
import Prometheus
import ServiceLifecycle

/// How `serve` runs (docs/operations.md#running-as-a-service-engage-sync-serve).
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 9464
    /// How often the scheduler looks for due pairs, and delivery for rows to send.
    public var tickSeconds = 10.0
    /// Pairs run at once (each holds a connection while it runs).
    public var maxConcurrentRuns = 1
    /// How long a graceful shutdown may take before what is left is cancelled.
    public var shutdownTimeoutSeconds = 30.0
    public var delivery = DeliveryOptions(maxWaitSeconds: 0)
    /// The run's instant for each tick (`ENGAGE_SYNC_NOW` or the clock).
    public var now: @Sendable () throws -> Date = { Date() }
    /// The shared secret of `POST /webhooks/vero` (`ENGAGE_WEBHOOK_SECRET`); nil turns it off.
    public var webhookSecret: Secret?
    /// The token the status page asks for (`ENGAGE_UI_TOKEN`); nil: none, only on a loopback host.
    public var uiToken: Secret?

    public init() {}
}

/// `engage-sync serve`: one process that schedules runs (``Scheduler``), delivers
/// (``DeliveryWorker``), and answers `/healthz`, `/metrics` and `/webhooks/vero` (its routes),
/// until SIGTERM or SIGINT (docs/operations.md#running-as-a-service-engage-sync-serve). One
/// connection pool and one HTTP client, the caller's,
/// serve every part. A graceful shutdown stops scheduling and claiming, lets the requests in
/// flight finish and be recorded, and releases the rows claimed but not sent; a second signal
/// exits at once (``ShutdownSignals``).
public struct EngageServer: Sendable {
    public let pool: PostgresConnectionPool
    public let client: HTTPClient
    public let configuration: ServerConfiguration

    public init(pool: PostgresConnectionPool, client: HTTPClient, configuration: ServerConfiguration) {
        self.pool = pool
        self.client = client
        self.configuration = configuration
    }

    /// Serves until a signal; `onListening` is told the HTTP port once it is bound. Makes this
    /// process's swift-metrics backend a Prometheus registry, exported on `/metrics` (so call
    /// it once per process).
    public func run(onListening: @escaping @Sendable (Int) -> Void) async throws {
        let logger = Logger(label: "engage-sync.serve")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let http = Application(router: Self.router(pool: pool, registry: registry, configuration: configuration),
                               configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                                    serverName: nil),
                               onServerRunning: { channel in onListening(channel.localAddress?.port ?? configuration.port) },
                               logger: logger)
        var group = ServiceGroupConfiguration(
            services: [http, Scheduler(pool: pool, client: client, configuration: configuration, logger: logger),
                       DeliveryWorker(pool: pool, client: client, configuration: configuration, logger: logger)],
            logger: logger)
        group.maximumGracefulShutdownDuration = .milliseconds(Int64(configuration.shutdownTimeoutSeconds * 1000))
        let services = ServiceGroup(configuration: group)
        let signals = await ShutdownSignals(group: services, logger: logger)
        defer { signals.cancel() }
        try await services.run()
    }
}
