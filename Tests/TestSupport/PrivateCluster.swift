import Foundation
import PostgresClient

/// A PostgreSQL server of its own, started with Scripts/lib-postgres.sh like the test
/// harness's, for a test that restarts the server or changes its settings without disturbing
/// the other tests.
public struct PrivateCluster: Sendable {
    public struct Failed: Error, CustomStringConvertible {
        public var description: String
    }

    /// The folder holding the cluster (removed by ``stop()``).
    public let directory: String
    /// `postgresql://postgres@127.0.0.1:PORT/postgres`
    public let url: String

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// Starts a cluster, runs `body` with it, and stops and removes it whatever happens.
    public static func with<T: Sendable>(_ body: (PrivateCluster) async throws -> T) async throws -> T {
        let cluster = try await start()
        do {
            let value = try await body(cluster)
            await cluster.stop()
            return value
        } catch {
            await cluster.stop()
            throw error
        }
    }

    /// Creates and starts a cluster in a new temporary folder.
    public static func start() async throws -> PrivateCluster {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("engage-pg-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        // The server's output goes to a file: a server holding our pipe would keep it open forever.
        let url = try await shell(#"pg_private_start "$1/pg" >"$1/start.log" 2>&1 && echo "$DATABASE_URL""#, directory)
        return PrivateCluster(directory: directory, url: url.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Restarts the server on the same port (`pg_ctl restart -m fast`): every session is cut.
    public func restart() async throws {
        _ = try await Self.shell(#"pg_ensure_installed && pg_as_owner "$PG_BIN/pg_ctl" -D "$1/pg/data" -m fast -w restart >"$1/restart.log" 2>&1"#, directory)
    }

    /// Stops the server, keeping its data (``startServer()`` brings it back on the same port).
    public func stopServer() async throws {
        _ = try await Self.shell(#"pg_ensure_installed && pg_private_stop "$1/pg""#, directory)
    }

    /// Starts a server stopped by ``stopServer()`` again, on its port.
    public func startServer() async throws {
        guard let port = url.split(separator: ":").last?.split(separator: "/").first else {
            throw Failed(description: "no port in \(url)")
        }
        _ = try await Self.shell(#"pg_ensure_installed && pg_private_launch "$1/pg" \#(port)"#, directory)
    }

    /// The server's log (what `pg_ctl -l` writes).
    public var serverLog: String { directory + "/pg/server.log" }

    /// Sets server parameters (`ALTER SYSTEM`) and reloads: sessions opened afterwards have them.
    /// A module's parameters are known once it is loaded: `loading` names those to load first.
    public func configure(_ settings: [String: String], loading modules: [String] = []) async throws {
        try await PostgresConnection.withConnection(url) { db in
            for module in modules { try await db.execute("LOAD \(unescaped: "'" + module + "'")") }
            for (name, value) in settings.sorted(by: { $0.key < $1.key }) {
                try await db.execute("ALTER SYSTEM SET \(unescaped: name) = \(unescaped: "'" + value + "'")")
            }
            try await db.query("SELECT pg_reload_conf()")
        }
    }

    /// Stops the server and removes its folder.
    public func stop() async {
        _ = try? await Self.shell(#"pg_ensure_installed && pg_private_stop "$1/pg""#, directory)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `script` with bash after sourcing Scripts/lib-postgres.sh; `$1` is `argument`.
    static func shell(_ script: String, _ argument: String) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "source \"\(repository)/Scripts/lib-postgres.sh\" && " + script, "bash", argument]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Foundation sometimes misses the exit of a shell whose grandchild (the server) lives
        // on, and waitUntilExit never returns: read the pipes, then reap the shell ourselves.
        let pid = process.processIdentifier
        let (stdout, stderr, status) = await CLI.offPool { () -> (Data, Data, Int32) in
            let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            return (o, e, (status >> 8) & 0xFF)
        }
        guard status == 0 else {
            throw Failed(description: "\(script) failed (\(status)): \(String(decoding: stderr, as: UTF8.self).suffix(2_000))")
        }
        return String(decoding: stdout, as: UTF8.self)
    }
}
