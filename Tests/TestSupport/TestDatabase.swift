import EngageStore
import Foundation
import PostgresClient

/// A database of its own for one test, created from `DATABASE_URL` and dropped afterwards,
/// so tests run in parallel without seeing each other's rows.
public enum TestDatabase {
    public struct NotConfigured: Error, CustomStringConvertible {
        public var description: String {
            "DATABASE_URL is not set: run the tests with Scripts/test.sh, which starts a private PostgreSQL"
        }
    }

    /// The server the tests use (the private cluster of Scripts/test.sh).
    public static func baseURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty else { throw NotConfigured() }
        return url
    }

    /// A URL for database `name` on the test server.
    public static func url(forDatabase name: String, on server: String? = nil) throws -> String {
        let base = try server ?? baseURL()
        guard var components = URLComponents(string: base) else { return base + " dbname=\(name)" }
        components.path = "/" + name
        return components.string ?? base
    }

    /// Creates a fresh database, optionally migrated, runs `body` with a connection to it and
    /// its URL, then drops it.
    /// `server` is the URL of another server than the test harness's.
    public static func with<T: Sendable>(migrated: Bool = true, server: String? = nil,
                                         _ body: (PostgresConnection, String) async throws -> T) async throws -> T {
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
        let admin = try await PostgresConnection.connect(try server ?? baseURL())
        try await admin.execute("CREATE DATABASE \(unescaped: String(name))")
        let url = try url(forDatabase: String(name), on: server)
        let result: Result<T, Error>
        do {
            let db = try await PostgresConnection.connect(url)
            if migrated { try await Migrations.migrate(db) }
            do { result = .success(try await body(db, url)) } catch { result = .failure(error) }
            await db.close()
        } catch {
            result = .failure(error)
        }
        try? await admin.execute("DROP DATABASE IF EXISTS \(unescaped: String(name)) WITH (FORCE)")
        await admin.close()
        return try result.get()
    }
}

/// Runs the built `engage-sync` executable, as cron or an operator would.
public struct CLIRun: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

public enum CLI {
    /// The executable: `ENGAGE_SYNC_BIN`, else the debug build next to this source tree.
    public static var executable: URL {
        if let path = ProcessInfo.processInfo.environment["ENGAGE_SYNC_BIN"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/engage-sync")
    }

    /// Starts the process; the caller waits or kills it.
    public static func start(_ arguments: [String], environment: [String: String] = [:],
                             stdin: Data? = nil) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if let stdin {
            let input = Pipe()
            process.standardInput = input
            try process.run()
            input.fileHandleForWriting.write(stdin)
            try input.fileHandleForWriting.close()
        } else {
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }
        return (process, out, err)
    }

    /// Runs to completion and captures the output.
    public static func run(_ arguments: [String], environment: [String: String] = [:],
                           stdin: Data? = nil) async throws -> CLIRun {
        let (process, out, err) = try start(arguments, environment: environment, stdin: stdin)
        return await collect(process, out, err)
    }

    /// Waits for a started process, reading its pipes as it goes so it never blocks on them.
    /// The blocking reads and the wait run on threads of their own (``offPool(_:)``), never on
    /// Swift's cooperative pool, which must stay free for in-process servers (the sandbox) the
    /// process may be talking to.
    public static func collect(_ process: Process, _ out: Pipe, _ err: Pipe) async -> CLIRun {
        async let stdout = offPool { out.fileHandleForReading.readDataToEndOfFile() }
        async let stderr = offPool { err.fileHandleForReading.readDataToEndOfFile() }
        let (o, e) = await (stdout, stderr)
        await offPool { process.waitUntilExit() }
        return CLIRun(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    /// Runs blocking `work` on a thread of its own. Not on GCD's global queue: on Linux it shares
    /// its threads' limit with Swift's executor, and with 40 reads of processes' pipes blocked
    /// there (the suite's `serve` and `deliver` children) the in-process tests' tasks stopped
    /// being scheduled, their transactions left idle until the suite timed out.
    public static func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: work()) }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }
}
