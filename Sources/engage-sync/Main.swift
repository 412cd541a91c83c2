import ArgumentParser
import Foundation
import Logging

/// Exit statuses (docs/commands.md): 0 all good; 1 error; 2 usage or validation error;
/// 3 the sync ran but some rows failed or a run was blocked (skipped rows too with `--strict`).
enum ExitStatus {
    static let error: Int32 = 1
    static let usage: Int32 = 2
    static let partial: Int32 = 3
}

/// An error the user caused (a bad definition, an unknown key): exit status 2.
protocol UserError: Error {}

@main
enum Main {
    static func main() async {
        bootstrapLogging()
        let command: ParsableCommand
        do {
            command = try EngageSyncCommand.parseAsRoot()
        } catch {
            // --help and --version arrive here as "errors" with exit code 0.
            let message = EngageSyncCommand.fullMessage(for: error)
            if EngageSyncCommand.exitCode(for: error) == .success {
                print(message)
                exit(0)
            }
            printError(message)
            exit(ExitStatus.usage)
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var syncCommand = command
                try syncCommand.run()
            }
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch where EngageSyncCommand.exitCode(for: error) == .success {
            // `--help` (at the root or after a subcommand) arrives here from run().
            print(EngageSyncCommand.fullMessage(for: error))
            exit(0)
        } catch {
            printError("error: \(error)")
            exit(error is UserError ? ExitStatus.usage : ExitStatus.error)
        }
        exit(0)
    }
}

/// Logs go to standard error at `ENGAGE_SYNC_LOG_LEVEL` (trace, debug, info, notice, warning,
/// error, critical; default warning), so cron mails stay quiet unless asked.
func bootstrapLogging() {
    let name = ProcessInfo.processInfo.environment["ENGAGE_SYNC_LOG_LEVEL"]?.lowercased() ?? "warning"
    let level = Logger.Level(rawValue: name) ?? .warning
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
