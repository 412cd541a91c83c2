import ArgumentParser
import EngageStore

extension EngageSyncCommand {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade the engage schema (idempotent, safe to run concurrently).")

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let report = try await database.withConnection { try await Migrations.migrate($0) }
            for name in report.applied { print("applied \(name)") }
            for name in report.readSide { print("created engage.\(name) (new or changed)") }
            if report.applied.isEmpty && report.readSide.isEmpty {
                print("schema engage is up to date (version \(report.version))")
            } else {
                print("schema engage is at version \(report.version)")
            }
        }
    }
}
