import ArgumentParser
import EngageStore
import Foundation
import PostgresClient

/// `engage-sync`: the root command. Subcommands are nested types in their own files.
struct EngageSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engage-sync",
        abstract: "Sync audiences and computed traits from PostgreSQL to Vero.",
        version: EngageSyncVersion.current,
        subcommands: [Migrate.self, Define.self, List.self, Preview.self, Remove.self, DestinationCommand.self,
                      Deliver.self, Forward.self, Sandbox.self, Run.self, Resync.self, Status.self, Ingest.self]
    )
}

enum EngageSyncVersion {
    static let current = "0.1.0"
}

/// Options every database command shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: "libpq URI or conninfo; default: DATABASE_URL, else the PG* variables as psql reads them.")
    var databaseURL: String?

    /// `--database-url`, else `DATABASE_URL`; nil lets libpq read the `PG*` variables.
    var resolvedURL: String? { databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"] }

    /// Connects as `psql` would (`--database-url`, then `DATABASE_URL`, then the `PG*`
    /// variables), runs `body`, and closes the connection whatever happens.
    func withConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await PostgresConnection.withConnection(resolvedURL, body)
    }
}

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
