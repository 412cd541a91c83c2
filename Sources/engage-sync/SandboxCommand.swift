import ArgumentParser
import Foundation
import VeroSandbox

extension EngageSyncCommand {
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
