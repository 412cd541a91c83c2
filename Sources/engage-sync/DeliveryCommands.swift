import ArgumentParser
import AsyncHTTPClient
import EngageStore
import EngageSync
import Foundation
import VeroClient
import VeroSandbox

extension UnknownDestination: UserError {}
extension LineReader.OpenError: UserError {}

/// Options of commands that deliver.
struct DeliveryFlags: ParsableArguments {
    @Option(help: "Wait for retries due within this many seconds before stopping (0: stop when nothing is due).")
    var maxWait: Double = 30
    @Option(help: "Per-request timeout in seconds.") var requestTimeout: Int64 = 30
    @Option(help: "Seconds a worker leases the rows it claims; a crashed worker's rows return after this.")
    var lease: Double = 120

    var options: DeliveryOptions {
        DeliveryOptions(leaseSeconds: max(1, lease), maxWaitSeconds: max(0, maxWait), requestTimeoutSeconds: max(1, requestTimeout))
    }
}

/// One HTTP client for the process, shut down when `body` ends.
func withHTTPClient<T: Sendable>(_ body: (HTTPClient) async throws -> T) async throws -> T {
    let client = VeroTransport.makeClient()
    do {
        let value = try await body(client)
        try? await client.shutdown()
        return value
    } catch {
        try? await client.shutdown()
        throw error
    }
}

/// Progress on stderr, only when it is a terminal.
func progressPrinter(_ label: String) -> (@Sendable (DeliveryReport) -> Void)? {
    guard isatty(STDERR_FILENO) == 1 else { return nil }
    return { report in
        let line = String(format: "\r%@: %d delivered, %d retrying, %d failed, %.0f req/s   ",
                          label, report.delivered, report.retried, report.failed, report.requestsPerSecond)
        FileHandle.standardError.write(Data(line.utf8))
    }
}

extension EngageSyncCommand {
    struct DestinationCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "destination", abstract: "Add or list destinations.", subcommands: [Add.self, List.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Add a destination, or change the given settings of an existing one.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "A name for the destination, e.g. vero.") var name: String
            @Option(help: "Destination kind (only vero).") var kind = "vero"
            @Option(help: "API base URL (default https://api.getvero.com).") var baseURL: String?
            @Option(help: "Name of the environment variable holding the auth token (default VERO_AUTH_TOKEN).") var tokenEnv: String?
            @Option(help: "Requests per second (default 100).") var rate: Double?
            @Option(help: "Requests in flight at most (default 16).") var concurrency: Int?
            @Option(help: "Attempts before a row is failed (default 10).") var maxAttempts: Int?
            @Option(help: "Guardrail: block incremental runs exiting more than this share of members (default 0.5).") var maxExitRatio: Double?
            @Flag(help: "Send profiles that have an email but no user id, with the email as the Vero id.") var allowEmailId = false

            func validate() throws {
                guard kind == "vero" else { throw ValidationError("--kind must be vero") }
                if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
                if let concurrency, !(1...1024).contains(concurrency) { throw ValidationError("--concurrency must be 1...1024") }
                if let maxAttempts, maxAttempts < 1 { throw ValidationError("--max-attempts must be at least 1") }
                if let maxExitRatio, !(0...1).contains(maxExitRatio) { throw ValidationError("--max-exit-ratio must be 0...1") }
                if let tokenEnv, tokenEnv.range(of: "^[A-Za-z_][A-Za-z0-9_]*$", options: .regularExpression) == nil {
                    throw ValidationError("--token-env takes the NAME of an environment variable, e.g. VERO_AUTH_TOKEN")
                }
            }

            func run() async throws {
                let settings = DestinationSettings(baseURL: baseURL, tokenEnv: tokenEnv, rate: rate, concurrency: concurrency,
                                                   maxAttempts: maxAttempts, maxExitRatio: maxExitRatio,
                                                   allowEmailID: allowEmailId ? true : nil)
                let d = try await database.withConnection { try await DestinationRepository($0).upsert(name: name, kind: kind, settings: settings) }
                print("destination \(d.name): \(d.kind) at \(d.baseURL), token from $\(d.tokenEnv), \(Int(d.rate))/s, \(d.concurrency) in flight")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List destinations.")
            @OptionGroup var database: DatabaseOptions

            func run() async throws {
                let all = try await database.withConnection { try await DestinationRepository($0).all() }
                guard !all.isEmpty else {
                    print("no destinations yet: add one with `engage-sync destination add vero --kind vero`")
                    return
                }
                printTable([["NAME", "KIND", "BASE_URL", "TOKEN_ENV", "RATE", "CONCURRENCY", "MAX_ATTEMPTS", "ENABLED"]]
                           + all.map { [$0.name, $0.kind, $0.baseURL, $0.tokenEnv, String(Int($0.rate)), String($0.concurrency),
                                        String($0.maxAttempts), $0.enabled ? "yes" : "no"] })
            }
        }
    }

    struct Deliver: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send pending outbox rows (all destinations, or one).",
            discussion: "Safe to run in several processes at once: rows are leased with FOR UPDATE SKIP LOCKED.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var flags: DeliveryFlags
        @Option(help: "Only this destination.") var destination: String?

        func run() async throws {
            let url = database.resolvedURL
            let destinations = try await database.withConnection { db -> [Destination] in
                let repository = DestinationRepository(db)
                if let destination { return [try await repository.find(name: destination)] }
                return try await repository.all().filter(\.enabled)
            }
            var anyFailed = false
            try await withHTTPClient { client in
                for d in destinations {
                    let report = try await Deliverer(destination: d, databaseURL: url, client: client, options: flags.options)
                        .run(progress: progressPrinter(d.name))
                    if isatty(STDERR_FILENO) == 1 { FileHandle.standardError.write(Data("\n".utf8)) }
                    print("\(d.name): \(report.summary)")
                    if report.failed > 0 || report.rejected > 0 { anyFailed = true }
                }
            }
            if anyFailed { throw ExitCode(ExitStatus.partial) }
        }
    }

    struct Forward: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send Segment-spec NDJSON straight to a destination, through the outbox.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var flags: DeliveryFlags
        @Argument(help: "An NDJSON file, or - for standard input.") var file: String = "-"
        @Option(help: "The destination.") var destination: String

        func run() async throws {
            let url = database.resolvedURL
            let report = try await withHTTPClient { client in
                try await Forwarder(databaseURL: url).forward(path: file, destinationName: destination, client: client,
                                                             options: flags.options, onBadLine: { printError($0) })
            }
            print("forward run \(report.runID): \(report.lines) lines, \(report.enqueued) enqueued, \(report.rejected) rejected, \(report.malformed) malformed; \(report.delivery.summary)")
            if report.malformed > 0 || report.rejected > 0 || report.delivery.failed > 0 { throw ExitCode(ExitStatus.partial) }
        }
    }

    struct Sandbox: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Serve a local Vero-compatible API, for tests and demos.")
        @Option(help: "Port (0: any free port).") var port = 8080
        @Option(help: "Accept only this auth token (default: any non-empty token).") var token: String?
        @Option(help: "Share of requests answered with --fail-status (0...1).") var failRate: Double = 0
        @Option(help: "Status of injected failures.") var failStatus = 503
        @Option(help: "Added latency per request, in milliseconds.") var latency = 0
        @Option(help: "At most N requests a second; the rest get 429 with Retry-After.") var rateLimit: Int?

        func validate() throws {
            guard (0...1).contains(failRate) else { throw ValidationError("--fail-rate must be 0...1") }
        }

        func run() async throws {
            let sandbox = VeroSandbox(configuration: SandboxConfiguration(
                token: token, failRate: failRate, failStatus: failStatus, latencyMilliseconds: latency, rateLimit: rateLimit))
            try await sandbox.run(port: port) { bound in
                // Written unbuffered: scripts wait for this line to know the port.
                FileHandle.standardOutput.write(Data("sandbox listening on http://127.0.0.1:\(bound)\n".utf8))
            }
        }
    }
}

extension EngageSyncCommand {
    struct Ingest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load Segment-spec NDJSON (identify, track, page, screen, group, alias) into profiles and events.",
            discussion: "Idempotent by messageId. Malformed lines are reported as `line N: reason` and skipped; exit 3 when any was.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "An NDJSON file, or - for standard input.") var file: String = "-"

        func run() async throws {
            let report = try await Ingestor(databaseURL: database.resolvedURL).ingest(path: file, onBadLine: { printError($0) })
            let c = report.counts
            print(String(format: "ingested %d lines in %.1f s: %d events (%d already present), %d profiles created, %d updated, %d aliases; %d lines rejected (%.0f events/s)",
                         report.lines, report.seconds, c.eventsInserted, c.duplicateEvents, c.profilesCreated, c.profilesUpdated,
                         c.aliases, report.rejected, report.eventsPerSecond))
            if report.rejected > 0 { throw ExitCode(ExitStatus.partial) }
        }
    }
}
