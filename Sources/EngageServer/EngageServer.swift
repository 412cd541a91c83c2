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
import UnixSignals

/// How `serve` runs (DESIGN §18).
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
    public var webhookSecret: String?

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

    /// Serves until a signal; `onListening` is told the HTTP port once it is bound. Makes this
    /// process's swift-metrics backend a Prometheus registry, exported on `/metrics` (so call
    /// it once per process).
    public func run(onListening: @escaping @Sendable (Int) -> Void) async throws {
        let logger = Logger(label: "engage-sync.serve")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let http = Application(router: Self.router(pool: pool, registry: registry, webhookSecret: configuration.webhookSecret),
                               configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                                    serverName: nil),
                               onServerRunning: { channel in onListening(channel.localAddress?.port ?? configuration.port) },
                               logger: logger)
        var group = ServiceGroupConfiguration(
            services: [http, Scheduler(pool: pool, client: client, configuration: configuration, logger: logger),
                       DeliveryWorker(pool: pool, client: client, configuration: configuration, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .milliseconds(Int64(configuration.shutdownTimeoutSeconds * 1000))
        // The service group shuts down gracefully on the first signal; a second one is someone
        // who will not wait: exit at once (leases expire as after a crash).
        let impatience = Task {
            var signals = 0
            for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                signals += 1
                if signals >= 2 {
                    logger.warning("a second \(signal): exiting at once; rows claimed and not recorded return when their lease expires")
                    exit(1)
                }
            }
        }
        defer { impatience.cancel() }
        try await ServiceGroup(configuration: group).run()
    }

    /// `GET /healthz`: 200 `{"status":"ok"}` when PostgreSQL answers, else 503 with the
    /// reason. `GET /metrics`: the counters of runs, changes and deliveries, the request
    /// latency histogram, and the database-held gauges, in Prometheus text. `POST
    /// /webhooks/vero`: Vero's email events (DESIGN §19), when a secret is set.
    static func router(pool: PostgresConnectionPool, registry: PrometheusCollectorRegistry,
                       webhookSecret: String?) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/healthz") { _, _ -> Response in
            do {
                try await pool.withConnection { try await $0.query("SELECT 1") }
                return json(.ok, ["status": "ok"])
            } catch {
                return json(.serviceUnavailable, ["status": "unavailable", "reason": .string("PostgreSQL is unreachable: \(error)")])
            }
        }
        router.post("/webhooks/vero") { request, _ -> Response in
            guard let webhookSecret else {
                return json(.notFound, ["status": "off", "reason": "webhooks are off: set ENGAGE_WEBHOOK_SECRET to turn them on"])
            }
            let bearer = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
            let given = request.uri.queryParameters.get("secret") ?? bearer ?? ""
            guard Self.sameSecret(given, webhookSecret) else {
                return json(.unauthorized, ["status": "unauthorized", "reason": "a wrong or missing secret"])
            }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: Self.maxWebhookBytes) } catch {
                return json(.badRequest, ["status": "rejected", "reason": "the body is over 1 MiB"])
            }
            switch VeroWebhookEvent.parse(Array(body.readableBytesView)) {
            case .failure(let invalid):
                return json(.badRequest, ["status": "rejected", "reason": .string(invalid.reason)])
            case .success(let event):
                do {
                    // Committed before the answer: an acknowledged event is never lost.
                    let stored = try await pool.withConnection { try await WebhookStore($0).record(event) }
                    return json(.ok, ["status": "ok", "event": .string(event.event), "stored": .bool(stored)])
                } catch {
                    return json(.serviceUnavailable, ["status": "unavailable", "reason": "the event could not be stored; Vero will retry"])
                }
            }
        }
        router.get("/metrics") { _, _ -> Response in
            do {
                let gauges = try await pool.withConnection { try await GaugeStore($0).gauges() }
                // The process's counters and histogram, then the gauges the database holds.
                var response = text(.ok, registry.emitToString() + PrometheusText.render(gauges))
                response.headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return response
            } catch {
                return text(.serviceUnavailable, "cannot read the metrics: \(error)\n")
            }
        }
        return router
    }

    static let maxWebhookBytes = 1 << 20

    /// Compares in time that depends on the lengths only, not on where the texts differ.
    static func sameSecret(_ given: String, _ secret: String) -> Bool {
        let a = Array(given.utf8), b = Array(secret.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0 && !secret.isEmpty
    }

    static func json(_ status: HTTPResponse.Status, _ body: JSONValue) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body.jsonString)))
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}

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
