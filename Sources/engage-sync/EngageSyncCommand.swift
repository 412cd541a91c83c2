import ArgumentParser
import AsyncHTTPClient
import EngageStore
import Foundation
import PostgresClient
import VeroClient

/// `engage-sync`: the root command. Subcommands are nested types in their own files.
struct EngageSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engage-sync",
        abstract: "Sync audiences and computed traits from PostgreSQL to Vero.",
        version: "\(EngageSyncVersion.current) (\(buildCommit))",
        subcommands: [Migrate.self, Define.self, List.self, Preview.self, Explain.self, Remove.self, DestinationCommand.self,
                      Deliver.self, Forward.self, Sandbox.self, Run.self, Resync.self, Serve.self, Status.self, Metrics.self, Ingest.self]
    )
}

/// The release (see CHANGELOG.md); `--version` prints it with the commit of the build.
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

    /// The one place a command's connections are made and closed: a small pool, closed when
    /// `body` ends however it ends.
    func withPool<T: Sendable>(maxConnections: Int = 8, _ body: (PostgresConnectionPool) async throws -> T) async throws -> T {
        let pool = PostgresConnectionPool(conninfo: resolvedURL, maxConnections: maxConnections)
        let result: Result<T, Error>
        do { result = .success(try await body(pool)) } catch { result = .failure(error) }
        await pool.close()
        return try result.get()
    }

    /// ``withPool(_:)`` and one HTTP client for every destination, shut down with it.
    func withServices<T: Sendable>(maxConnections: Int = 8, _ body: (PostgresConnectionPool, HTTPClient) async throws -> T)
        async throws -> T {
        try await withPool(maxConnections: maxConnections) { pool in
            let client = VeroTransport.makeClient()
            let result: Result<T, Error>
            do { result = .success(try await body(pool, client)) } catch { result = .failure(error) }
            try? await client.shutdown()
            return try result.get()
        }
    }
}
