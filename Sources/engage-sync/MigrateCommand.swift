import ArgumentParser
import EngageStore

extension EngageSyncCommand {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade the engage schema (idempotent, safe to run concurrently).")

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let report = try await database.withConnection { try await Migrations.migrate($0) }
            if report.applied.isEmpty {
                print("schema engage is up to date (version \(report.version))")
            } else {
                for name in report.applied { print("applied \(name)") }
                print("schema engage is at version \(report.version)")
            }
        }
    }
}
