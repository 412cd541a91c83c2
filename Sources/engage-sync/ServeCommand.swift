import ArgumentParser
import EngageCore
import EngageServer
import Foundation

extension EngageSyncCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the scheduler and delivery in one process, with /healthz and /metrics, until SIGTERM or SIGINT.",
            discussion: """
                Every --tick seconds the pairs that are due are run (as `run --no-deliver`), and every enabled destination
                that is not paused is delivered to. GET /healthz answers 200 while PostgreSQL does, else 503 with the reason;
                GET /metrics gives the gauges of `engage-sync metrics`. POST /webhooks/vero stores Vero's email events
                (opened, clicked, bounced, …) as events when ENGAGE_WEBHOOK_SECRET is set. On SIGTERM or SIGINT it stops scheduling and
                claiming, lets the requests in flight finish and be recorded (at most --shutdown-timeout seconds),
                releases the rows it claimed but did not send, and exits 0. A second signal exits at once (status 1).
                GET / is a status page (every pair, each definition's size over time, each destination's delivery). On an
                address other than 127.0.0.1 it needs ENGAGE_UI_TOKEN, asked for as a bearer token or by a sign-in form.
                """)
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Address to listen on.") var host = "127.0.0.1"
        @Option(help: "Port to listen on (0: any free port).") var port = 9464
        @Option(help: "Seconds between looks for due pairs and rows to send.") var tick: Double = 10
        @Option(help: "Seconds a graceful shutdown may take.") var shutdownTimeout: Double = 30
        @Option(help: "Pairs run at once (1...16), each on a connection of its own.") var maxConcurrentRuns = 1
        @OptionGroup var delivery: DeliveryFlags

        func validate() throws {
            guard tick > 0 else { throw ValidationError("--tick must be positive") }
            guard shutdownTimeout > 0 else { throw ValidationError("--shutdown-timeout must be positive") }
            guard (1...16).contains(maxConcurrentRuns) else { throw ValidationError("--max-concurrent-runs must be 1...16") }
            guard EngageServer.isLoopback(host) || Self.uiToken != nil else {
                throw ValidationError("""
                    --host \(host) would show the status page to other machines: set ENGAGE_UI_TOKEN to a secret of your \
                    own (the page then asks for it), or serve on 127.0.0.1
                    """)
            }
        }

        /// The status page's token (`ENGAGE_UI_TOKEN`), nil when unset or empty.
        static var uiToken: Secret? { Secret(environment: "ENGAGE_UI_TOKEN", ProcessInfo.processInfo.environment) }

        func run() async throws {
            var configuration = ServerConfiguration()
            configuration.host = host
            configuration.port = port
            configuration.tickSeconds = tick
            configuration.shutdownTimeoutSeconds = shutdownTimeout
            configuration.maxConcurrentRuns = maxConcurrentRuns
            configuration.delivery = delivery.options(maxWait: 0)
            configuration.now = { try RunInstant.now() }
            configuration.uiToken = Self.uiToken
            configuration.webhookSecret = Secret(environment: "ENGAGE_WEBHOOK_SECRET", ProcessInfo.processInfo.environment)
            _ = try RunInstant.now() // a bad ENGAGE_SYNC_NOW fails now, not at every tick
            // The runs, a SQL definition's reader each, delivery's two, and the HTTP endpoints.
            try await database.withServices(maxConnections: 2 * maxConcurrentRuns + 4) { pool, client in
                try await EngageServer(pool: pool, client: client, configuration: configuration).run { bound in
                    // Written unbuffered: scripts and tests wait for this line to know the port.
                    FileHandle.standardOutput.write(Data("serve listening on http://\(host):\(bound)\n".utf8))
                }
            }
        }
    }
}
