import ArgumentParser
import EngageCore
import EngageStore
import EngageSync
import Foundation

extension UnknownKey: UserError {}

/// Prints one line per pair and turns the outcomes into the exit status docs/commands.md lists.
func report(_ outcomes: [PairOutcome], dryRun: Bool) throws {
    if outcomes.isEmpty { print(dryRun ? "nothing to plan" : "nothing is due") }
    for o in outcomes {
        let c = o.counts
        var line = "\(o.key) → \(o.destination): "
        switch o.status {
        case .skipped:
            line += o.message ?? "skipped"
        case .blocked:
            line += "BLOCKED. " + (o.message ?? "")
        case .planned:
            line += "\(o.mode.rawValue) would send: \(c.members) members, +\(c.entered) entered, -\(c.exited) exited, \(c.changed) changed, \(c.unchanged) unchanged"
            for e in o.examples { line += "\n    \(e.op.rawValue) \(e.userID ?? "(no user id) \(e.profileID)") = \(e.value)" }
        default:
            line += "\(o.mode.rawValue) run \(o.runID.map(String.init) ?? "-") \(o.status.rawValue): \(c.members) members, +\(c.entered) entered, -\(c.exited) exited, \(c.changed) changed"
            if c.skipped > 0 { line += ", \(c.skipped) skipped (missing_user_id)" }
            if c.superseded > 0 { line += ", \(c.superseded) superseded" }
            line += "; delivered \(o.delivered), failed \(o.failed), pending \(o.pending)"
            let evaluation = o.evaluation.map { " \($0.kind.rawValue) of \($0.affected)\($0.fullBecause.map { " (\($0))" } ?? "")" } ?? ""
            line += String(format: " [evaluate %.2fs%@, diff %.2fs]", o.timings.evaluate, evaluation, o.timings.diff)
            if let drift = o.evaluation?.drift, drift > 0 {
                line += "\n    warning: the incremental snapshot differed from a full evaluation for \(drift) profiles (corrected)"
            }
            if let message = o.message { line += "\n    error: \(message)" }
        }
        print(line)
    }
    // Delivery serves every pair of a destination at once: its time is printed once.
    var printed: Set<String> = []
    for o in outcomes where o.runID != nil && o.timings.deliver > 0 && printed.insert(o.destination).inserted {
        print(String(format: "delivery to %@: %.2fs", o.destination, o.timings.deliver))
    }
    if let failed = outcomes.first(where: { $0.status == .failed }) {
        printError("error: \(failed.key) → \(failed.destination): \(failed.message ?? "failed")")
        throw ExitCode(ExitStatus.error)
    }
    if outcomes.contains(where: { $0.status == .blocked || $0.status == .partial }) {
        throw ExitCode(ExitStatus.partial)
    }
}

extension EngageSyncCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sync every (definition, destination) pair that is due; for cron.",
            discussion: """
                A pair is due when it never ran or its last successful run started at least sync_every ago.
                Safe to start every minute: overlapping invocations skip pairs another process is running.
                Exit status: 0 all good, 1 error, 2 usage, 3 some rows failed or a run was blocked (with --strict,
                also rows skipped for want of a Vero user id).
                """)
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var flags: DeliveryFlags
        @Option(name: .customLong("key"), help: "Only this definition (repeatable); runs it now, whatever the schedule.") var keys: [String] = []
        @Option(help: "Only this destination.") var destination: String?
        @Flag(help: "Ignore the schedule: run every pair.") var all = false
        @Flag(help: "Print what would enter, exit and change; write nothing.") var dryRun = false
        @Flag(help: "Enqueue only; send later with `engage-sync deliver`.") var noDeliver = false
        @Flag(help: "Let a run through that the exit guardrail would block.") var force = false
        @Flag(help: "Evaluate every profile instead of the changed ones (a check; incremental runs are exact).") var full = false
        @Flag(help: "Count rows skipped for want of a Vero user id as a partial run (exit 3).") var strict = false

        func run() async throws {
            var request = SyncRequest()
            request.keys = keys
            request.destination = destination
            request.all = all
            request.dryRun = dryRun
            request.noDeliver = noDeliver
            request.force = force
            request.fullEvaluation = full
            request.strict = strict
            request.delivery = flags.options()
            let now = try RunInstant.now()
            let outcomes = try await database.withServices { pool, client in
                try await SyncRunner(pool: pool, client: client).run(request, now: now, progress: syncProgress(pool: pool))
            }
            try report(outcomes, dryRun: dryRun)
        }
    }

    struct Resync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send every current member again, and false to ledger-true profiles that left.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var flags: DeliveryFlags
        @Option(name: .customLong("key"), help: "Only this definition (repeatable).") var keys: [String] = []
        @Option(help: "Only this destination.") var destination: String?
        @Flag(help: "Count rows skipped for want of a Vero user id as a partial run (exit 3).") var strict = false

        func run() async throws {
            var request = SyncRequest()
            request.keys = keys
            request.destination = destination
            request.strict = strict
            request.mode = .resync
            request.delivery = flags.options()
            let now = try RunInstant.now()
            let outcomes = try await database.withServices { pool, client in
                try await SyncRunner(pool: pool, client: client).run(request, now: now, progress: syncProgress(pool: pool))
            }
            try report(outcomes, dryRun: false)
        }
    }
}
