import ArgumentParser
import EngageStore

extension UnknownDestination: UserError {}
extension DestinationKind: ExpressibleByArgument {}

extension EngageSyncCommand {
    struct DestinationCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "destination", abstract: "Add, list or resume destinations.", subcommands: [Add.self, List.self, Resume.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Add a destination, or change the given settings of an existing one.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "A name for the destination, e.g. vero.") var name: String
            @Option(help: "Destination kind (only vero).") var kind: DestinationKind = .vero
            @Option(help: "API base URL (default https://api.getvero.com).") var baseURL: String?
            @Option(help: "Name of the environment variable holding the auth token (default VERO_AUTH_TOKEN).") var tokenEnv: String?
            @Option(help: "Requests per second (default 100).") var rate: Double?
            @Option(help: "Requests in flight at most (default 16).") var concurrency: Int?
            @Option(help: "Attempts before a row is failed (default 10).") var maxAttempts: Int?
            @Option(help: "Guardrail: block incremental runs exiting more than this share of members (default 0.5).") var maxExitRatio: Double?
            @Flag(help: "Send profiles that have an email but no user id, with the email as the Vero id.") var allowEmailId = false

            func validate() throws {
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
                print("destination \(d.name): \(d.kind.rawValue) at \(d.baseURL), token from $\(d.tokenEnv), \(Int(d.rate))/s, \(d.concurrency) in flight")
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
                printTable([["NAME", "KIND", "BASE_URL", "TOKEN_ENV", "RATE", "CONCURRENCY", "MAX_ATTEMPTS", "ENABLED", "PAUSED"]]
                           + all.map { [$0.name, $0.kind.rawValue, $0.baseURL, $0.tokenEnv, String(Int($0.rate)), String($0.concurrency),
                                        String($0.maxAttempts), $0.enabled ? "yes" : "no", $0.pausedReason ?? "no"] })
            }
        }

        struct Resume: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Resume delivery to a destination paused because Vero rejected its token (fix the token first).")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The destination's name.") var name: String

            func run() async throws {
                let d = try await database.withConnection { try await DestinationRepository($0).resume(name: name) }
                print("destination \(d.name) resumed: `engage-sync deliver` (or the next run) sends its pending rows")
            }
        }
    }
}
