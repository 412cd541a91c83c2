import NIOConcurrencyHelpers

/// A small pool of connections to one database: where a command's (or a long-running
/// process's) parts get their connections, so one place opens and closes them all.
///
/// A connection is leased for the whole of a body and returned clean: `DISCARD ALL` drops its
/// temporary tables, session settings and session advisory locks, so nothing of one lease
/// leaks into the next. A body that throws gets its connection closed instead (it may be
/// broken, or mid-way through something). At most `maxConnections` are open; a lease beyond
/// that waits for a release.
public final class PostgresConnectionPool: Sendable {
    /// libpq URI or conninfo; nil or empty reads the `PG*` variables, as `psql` does.
    public let conninfo: String?
    public let maxConnections: Int

    private struct State {
        var idle: [PostgresConnection] = []
        var open = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    /// Another login than the conninfo's (same server and database), or nil.
    public let login: PostgresLogin?

    public init(conninfo: String?, login: PostgresLogin? = nil, maxConnections: Int = 8) {
        self.conninfo = conninfo
        self.login = login
        self.maxConnections = max(1, maxConnections)
    }

    /// Leases a connection for `body` and returns it afterwards.
    public func withConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        do {
            let value = try await body(connection)
            await release(connection, reusable: true)
            return value
        } catch {
            await release(connection, reusable: false)
            throw error
        }
    }

    /// Leases `count` connections at once (delivery's claiming and recording, ingest's lanes).
    public func withConnections<T: Sendable>(_ count: Int, _ body: ([PostgresConnection]) async throws -> T) async throws -> T {
        func lease(_ leased: [PostgresConnection]) async throws -> T {
            guard leased.count < count else { return try await body(leased) }
            return try await withConnection { try await lease(leased + [$0]) }
        }
        return try await lease([])
    }

    /// Closes every idle connection; leases after this fail, and connections in use are closed
    /// when they come back.
    public func close() async {
        let (idle, waiters) = state.withLockedValue { s -> ([PostgresConnection], [CheckedContinuation<Void, Never>]) in
            s.closed = true
            defer { s.idle = []; s.waiters = [] }
            s.open -= s.idle.count
            return (s.idle, s.waiters)
        }
        for connection in idle { await connection.close() }
        for waiter in waiters { waiter.resume() }
    }

    private enum Next {
        case use(PostgresConnection), connect, wait, closed
    }

    private func lease() async throws -> PostgresConnection {
        while true {
            let next = state.withLockedValue { s -> Next in
                if s.closed { return .closed }
                if let connection = s.idle.popLast() { return .use(connection) }
                if s.open < maxConnections {
                    s.open += 1
                    return .connect
                }
                return .wait
            }
            switch next {
            case .use(let connection):
                return connection
            case .connect:
                do {
                    return try await PostgresConnection.connect(conninfo, login: login)
                } catch {
                    wakeOne { $0.open -= 1 }
                    throw error
                }
            case .closed:
                throw PostgresError(kind: .usage, message: "the connection pool is closed")
            case .wait:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    // Checked again under the lock, so a release between the two is not missed.
                    let now = state.withLockedValue { s -> Bool in
                        if s.closed || !s.idle.isEmpty || s.open < maxConnections { return true }
                        s.waiters.append(continuation)
                        return false
                    }
                    if now { continuation.resume() }
                }
            }
        }
    }

    private func release(_ connection: PostgresConnection, reusable: Bool) async {
        var keep = reusable && !state.withLockedValue(\.closed)
        if keep {
            do { try await connection.execute("DISCARD ALL") } catch { keep = false }
        }
        if !keep { await connection.close() }
        let closedMeanwhile = wakeOne { s -> Bool in
            if keep && !s.closed {
                s.idle.append(connection)
                return false
            }
            s.open -= 1
            return keep
        }
        if closedMeanwhile { await connection.close() }
    }

    /// Changes the state and wakes one waiting lease.
    @discardableResult
    private func wakeOne<R>(_ change: (inout State) -> R) -> R {
        let (result, waiter) = state.withLockedValue { s -> (R, CheckedContinuation<Void, Never>?) in
            let result = change(&s)
            return (result, s.waiters.isEmpty ? nil : s.waiters.removeFirst())
        }
        waiter?.resume()
        return result
    }
}
