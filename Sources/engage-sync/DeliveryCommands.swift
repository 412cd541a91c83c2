import ArgumentParser
import EngageStore
import EngageSync
import Foundation
import PostgresClient

/// Options of commands that deliver (`serve` among them).
struct DeliveryFlags: ParsableArguments {
    @Option(help: """
        Wait for retries due within this many seconds before stopping (0: stop when nothing is due). \
        Default: 30; 0 for serve, which looks again every tick.
        """)
    var maxWait: Double?
    @Option(help: "Seconds one request may take, the answer's body included.") var requestTimeout: Int64 = DeliveryOptions.defaultRequestTimeoutSeconds
    @Option(help: """
        Seconds a worker leases the rows it claims; a live worker renews the lease of what it holds every quarter \
        of it, and a crashed worker's rows return after it.
        """)
    var lease: Double = DeliveryOptions.defaultLeaseSeconds

    /// The options, with `maxWait` when the flag is not given.
    func options(maxWait defaultMaxWait: Double = 30) -> DeliveryOptions {
        DeliveryOptions(leaseSeconds: max(1, lease), maxWaitSeconds: max(0, maxWait ?? defaultMaxWait),
                        requestTimeoutSeconds: max(1, requestTimeout))
    }
}

extension EngageSyncCommand {
    struct Deliver: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send pending outbox rows (all destinations, or one).",
            discussion: "Safe to run in several processes at once: rows are leased with FOR UPDATE SKIP LOCKED.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var flags: DeliveryFlags
        @Option(help: "Only this destination.") var destination: String?

        func run() async throws {
            // The worst outcome decides the exit status: a destination that could not be
            // delivered (paused, or an error) 1, rows failed or rejected 3.
            let worst = try await database.withServices { pool, client in
                let targets = try await pool.withConnection { try await DestinationRepository($0).deliveryTargets(only: destination) }
                var worst: Int32 = 0
                let progress = DeliveryProgress(pool: pool)
                for d in targets.active {
                    do {
                        let report = try await Deliverer(destination: d, pool: pool, client: client, options: flags.options())
                            .run(progress: await progress.start(d))
                        progress.finish()
                        print("\(d.name): \(report.summary)")
                        if report.failed > 0 || report.rejected > 0, worst == 0 { worst = ExitStatus.partial }
                    } catch let error as PostgresError where error.kind == .connection {
                        progress.finish()
                        throw error
                    } catch {
                        // One destination's failure (a missing token, a pause meanwhile) is its own.
                        progress.finish()
                        printError("error: delivery to \(d.name): \(error)")
                        worst = ExitStatus.error
                    }
                }
                for d in targets.paused {
                    printError("error: \(DestinationPaused(destination: d.name, reason: d.pausedReason ?? "paused"))")
                    worst = ExitStatus.error
                }
                return worst
            }
            if worst != 0 { throw ExitCode(worst) }
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
            let report = try await database.withServices { pool, client in
                let progress = DeliveryProgress(pool: pool)
                defer { progress.finish() }
                return try await Forwarder(pool: pool, client: client).forward(
                    path: file, destinationName: destination, options: flags.options(), onBadLine: { printError($0) },
                    deliveryProgress: { await progress.start($0) })
            }
            print("forward run \(report.runID): \(report.lines) lines, \(report.enqueued) enqueued, \(report.rejected) rejected, \(report.malformed) malformed; \(report.delivery.summary)")
            if report.malformed > 0 || report.rejected > 0 || report.delivery.failed > 0 { throw ExitCode(ExitStatus.partial) }
        }
    }
}
