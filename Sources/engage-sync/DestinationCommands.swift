import ArgumentParser
import EngageStore
import Foundation

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
            @Flag(help: "Allow a --base-url on a link-local address (169.254.x.x, fe80::, e.g. a cloud metadata service) and do not warn about private ones.")
            var allowPrivate = false

            func validate() throws {
                if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
                if let concurrency, !(1...1024).contains(concurrency) { throw ValidationError("--concurrency must be 1...1024") }
                if let maxAttempts, maxAttempts < 1 { throw ValidationError("--max-attempts must be at least 1") }
                if let maxExitRatio, !(0...1).contains(maxExitRatio) { throw ValidationError("--max-exit-ratio must be 0...1") }
                if let tokenEnv, tokenEnv.range(of: "^[A-Za-z_][A-Za-z0-9_]*$", options: .regularExpression) == nil {
                    throw ValidationError("--token-env takes the NAME of an environment variable, e.g. VERO_AUTH_TOKEN")
                }
                if let baseURL, case .refused(let reason) = BaseURLCheck.check(baseURL, allowPrivate: allowPrivate) {
                    throw ValidationError(reason)
                }
            }

            func run() async throws {
                if let baseURL, case .warning(let warning) = BaseURLCheck.check(baseURL, allowPrivate: allowPrivate) {
                    printError("warning: \(warning)")
                }
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

/// What `destination add` makes of a `--base-url`: an http(s) URL without credentials; a
/// link-local host (a cloud metadata service answers there) only with `--allow-private`; a
/// private network address with a warning (loopback, where the sandbox runs, is fine).
enum BaseURLCheck: Equatable {
    case fine
    case warning(String)
    case refused(String)

    static func check(_ text: String, allowPrivate: Bool) -> BaseURLCheck {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            return .refused("--base-url must be an http(s) URL with a host, e.g. https://api.getvero.com")
        }
        if url.user != nil || url.password != nil {
            return .refused("--base-url must not carry credentials (they would be stored and shown); the token comes from --token-env")
        }
        guard !allowPrivate else { return .fine }
        let address = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        let octets = address.split(separator: ".").compactMap { UInt8($0) }
        let ipv4 = octets.count == 4 && address.split(separator: ".").count == 4
        let ipv6 = address.contains(":")
        if ipv4 && octets[0] == 169 && octets[1] == 254 || ipv6 && ["fe8", "fe9", "fea", "feb"].contains(where: address.hasPrefix) {
            return .refused("--base-url \(host) is a link-local address (a cloud metadata service answers there); pass --allow-private if it really is Vero")
        }
        let privateIPv4 = ipv4 && (octets[0] == 10 || octets[0] == 172 && (16...31).contains(octets[1]) || octets[0] == 192 && octets[1] == 168)
        if privateIPv4 || ipv6 && (address.hasPrefix("fc") || address.hasPrefix("fd")) {
            return .warning("--base-url \(host) is a private network address, not Vero's API (--allow-private silences this)")
        }
        return .fine
    }
}
