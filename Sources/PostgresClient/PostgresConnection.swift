import CLibPQ
import Foundation
import NIOConcurrencyHelpers
import NIOPosix

/// A notice or warning the server sent (`RAISE NOTICE`, "relation already exists, skipping", ...).
public struct PostgresNotice: Sendable {
    public var severity: String
    public var message: String
}

/// One PostgreSQL connection over libpq.
///
/// Threading rule: libpq calls block, so every call runs on a dedicated `NIOThreadPool`,
/// never on Swift's cooperative pool. A connection serves **one task at a time**: each call
/// holds the connection's lock while libpq works, but a transaction spans several calls, so
/// share a connection between tasks only by handing it over, never concurrently.
public final class PostgresConnection: @unchecked Sendable {
    /// Blocking libpq work runs here. Sized generously: a call waiting on a row lock holds a
    /// thread, and starving the pool must not deadlock other connections.
    static let blockingPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 64)
        pool.start()
        return pool
    }()

    private let conn: OpaquePointer
    private let lock = NIOLock()
    private var closed = false
    private let noticeBox: NoticeBox

    /// Where the connection goes, for messages: `host:port/database` (never the password).
    public let endpoint: String

    private init(conn: OpaquePointer, endpoint: String, noticeBox: NoticeBox) {
        self.conn = conn
        self.endpoint = endpoint
        self.noticeBox = noticeBox
    }

    deinit {
        if !closed { PQfinish(conn) }
    }

    /// Connects with a libpq URI (`postgresql://…`) or conninfo string (`host=… dbname=…`).
    /// With nil or an empty string, libpq reads the standard `PG*` environment variables,
    /// exactly as `psql` does. Sets `TimeZone=UTC` and `DateStyle=ISO` for the session.
    ///
    /// - Parameter onNotice: called, on a pool thread, for every notice the server sends.
    /// - Parameter login: connect as this login instead of the conninfo's user (same server
    ///   and database).
    public static func connect(_ conninfo: String? = nil,
                               applicationName: String = "engage-sync",
                               login: PostgresLogin? = nil,
                               onNotice: (@Sendable (PostgresNotice) -> Void)? = nil) async throws -> PostgresConnection {
        let connection = try await runBlocking { () throws -> PostgresConnection in
            // Keys/values form lets us add options whatever the conninfo looks like.
            var keys = ["dbname", "fallback_application_name", "options", "client_encoding"]
            var values = [conninfo ?? "", applicationName, "-c TimeZone=UTC -c DateStyle=ISO", "UTF8"]
            var expand: Int32 = 1
            if let login {
                guard let parameters = login.parameters(replacingLoginOf: conninfo) else {
                    throw PostgresError(kind: .connection, message: "cannot parse the connection string to connect as \(login.user)")
                }
                keys = parameters.keys + keys.dropFirst()
                values = parameters.values + values.dropFirst()
                expand = 0
            }
            let raw = withCStrings(keys) { k in withCStrings(values) { v in PQconnectdbParams(k, v, expand) } }
            guard let raw else {
                throw PostgresError(kind: .connection, message: "could not allocate a libpq connection")
            }
            let endpoint = describeEndpoint(raw)
            guard PQstatus(raw) == CONNECTION_OK else {
                let message = lastError(raw)
                PQfinish(raw)
                throw PostgresError(kind: .connection, message: "cannot connect to PostgreSQL at \(endpoint): \(message)")
            }
            let box = NoticeBox(handler: onNotice)
            PQsetNoticeReceiver(raw, noticeReceiver, Unmanaged.passUnretained(box).toOpaque())
            return PostgresConnection(conn: raw, endpoint: endpoint, noticeBox: box)
        }
        return connection
    }

    /// Connects, runs `body`, and closes the connection whether `body` returns or throws.
    public static func withConnection<T: Sendable>(_ conninfo: String? = nil, login: PostgresLogin? = nil,
                                                   _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await connect(conninfo, login: login)
        do {
            let value = try await body(connection)
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Closes the connection. Further calls throw.
    public func close() async {
        _ = try? await Self.runBlocking { [self] in
            lock.withLock {
                if !closed {
                    closed = true
                    PQfinish(conn)
                }
            }
        }
    }

    /// The server's process id for this session (for `pg_terminate_backend` in tests).
    public var backendPID: Int32 { lock.withLock { PQbackendPID(conn) } }

    // MARK: - Statements

    /// Runs one or more statements separated by `;` with the simple protocol. They take no
    /// parameters (use ``query(_:)``), so `statements` must have no bound values: SQL text
    /// built from pieces says so with `\(unescaped: …)`. Stops at the first failing
    /// statement; earlier ones outside a transaction stay applied.
    public func execute(_ statements: PostgresQuery) async throws {
        let sql = try Self.withoutBinds(statements, "execute")
        try await blocking { conn in
            guard PQsendQuery(conn, sql) == 1 else {
                throw self.connectionError(statement: sql)
            }
            var firstError: PostgresError?
            while let result = PQgetResult(conn) {
                defer { PQclear(result) }
                if firstError == nil, let error = Self.resultError(result, conn: conn, statement: sql) {
                    firstError = error
                }
            }
            if let firstError { throw firstError }
        }
    }

    /// Runs one statement; every interpolated value is a bound parameter (see ``PostgresQuery``).
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        let sql = query.sql, binds = query.binds
        return try await blocking { conn in
            let result = Self.execParams(conn, sql, binds)
            defer { PQclear(result) }
            if let error = Self.resultError(result, conn: conn, statement: sql) { throw error }
            return Self.rows(of: result)
        }
    }

    private static func withoutBinds(_ query: PostgresQuery, _ function: String) throws -> String {
        guard query.binds.isEmpty else {
            throw PostgresError(kind: .usage, message: "\(function) takes no parameters; bind values with query(_:)",
                                statement: query.sql)
        }
        return query.sql
    }

    // MARK: - Transactions

    /// Open transactions on this connection: 0 outside one, 1 in a transaction, more inside
    /// nested ones (savepoints).
    private let depth = NIOLockedValueBox(0)

    /// Runs `body` in a transaction and commits when it returns, or rolls back when it throws,
    /// when it asked for a rollback (``PostgresTransaction/rollback()``, the value is still
    /// returned), or when the task was cancelled by the time it returns (then throws
    /// `CancellationError`).
    ///
    /// Inside another transaction on the same connection it is a savepoint: its rollback undoes
    /// only its own work. An error the body throws propagates unchanged once the rollback is
    /// done; a failure of the transaction itself is a ``PostgresTransactionError`` naming the
    /// phase (begin, commit, rollback, or the body when the rollback after it failed too).
    public func withTransaction<T: Sendable>(_ body: (PostgresTransaction) async throws -> T) async throws -> T {
        let level = depth.withLockedValue { d -> Int in d += 1; return d }
        defer { depth.withLockedValue { $0 -= 1 } }
        let savepoint = "engage_savepoint_\(level)"
        let (begin, commit, rollback): (PostgresQuery, PostgresQuery, PostgresQuery) = level == 1
            ? ("BEGIN", "COMMIT", "ROLLBACK")
            : ("SAVEPOINT \(unescaped: savepoint)", "RELEASE SAVEPOINT \(unescaped: savepoint)",
               "ROLLBACK TO SAVEPOINT \(unescaped: savepoint); RELEASE SAVEPOINT \(unescaped: savepoint)")
        do { try await execute(begin) } catch {
            throw PostgresTransactionError(phase: .begin, underlying: error)
        }
        let transaction = PostgresTransaction(connection: self)
        let value: T
        do {
            value = try await body(transaction)
            try Task.checkCancellation()
        } catch {
            // A broken connection cannot roll back; the server aborts the transaction anyway.
            do { try await execute(rollback) } catch let rollbackError {
                throw PostgresTransactionError(phase: .body, underlying: error, rollbackError: rollbackError)
            }
            throw error
        }
        if transaction.rollsBack {
            do { try await execute(rollback) } catch {
                throw PostgresTransactionError(phase: .rollback, underlying: error)
            }
        } else {
            do { try await execute(commit) } catch {
                throw PostgresTransactionError(phase: .commit, underlying: error)
            }
        }
        return value
    }

    // MARK: - COPY

    /// Streams rows into `COPY … FROM STDIN`. `body` writes text-format data (already
    /// escaped; see ``PostgresCopyWriter/escape(_:)``) through the writer, which sends it in
    /// chunks. Returns the number of rows copied. An error thrown by `body` aborts the COPY.
    @discardableResult
    public func copyIn(_ statement: PostgresQuery, _ body: (PostgresCopyWriter) async throws -> Void) async throws -> Int {
        let sql = try Self.withoutBinds(statement, "copyIn")
        try await blocking { conn in
            let result = PQexec(conn, sql)
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_COPY_IN else {
                throw Self.resultError(result, conn: conn, statement: sql)
                    ?? PostgresError(kind: .usage, message: "statement did not start a COPY FROM STDIN", statement: sql)
            }
        }
        let writer = PostgresCopyWriter(connection: self)
        do {
            try await body(writer)
            try await writer.flush()
        } catch {
            try? await blocking { conn in
                _ = PQputCopyEnd(conn, "aborted by client")
                while let r = PQgetResult(conn) { PQclear(r) }
            }
            throw error
        }
        return try await blocking { conn in
            guard PQputCopyEnd(conn, nil) == 1 else { throw self.connectionError(statement: sql) }
            var outcome: Result<Int, PostgresError> = .success(0)
            while let result = PQgetResult(conn) {
                defer { PQclear(result) }
                if let error = Self.resultError(result, conn: conn, statement: sql) {
                    outcome = .failure(error)
                } else if case .success = outcome {
                    outcome = .success(Int(String(cString: PQcmdTuples(result))) ?? 0)
                }
            }
            return try outcome.get()
        }
    }

    /// Runs `COPY … TO STDOUT` and hands its text-format output to `body` in chunks of about
    /// 256 KiB (whole rows). Sent with the extended protocol, so the statement is one
    /// statement and nothing else. Returns the number of rows copied. An error thrown by `body`
    /// stops reading; the rest of the output is drained before it propagates.
    @discardableResult
    public func copyOut(_ statement: PostgresQuery, _ body: ([UInt8]) async throws -> Void) async throws -> Int {
        let sql = try Self.withoutBinds(statement, "copyOut")
        try await blocking { conn in
            let result = Self.execParams(conn, sql, [])
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_COPY_OUT else {
                throw Self.resultError(result, conn: conn, statement: sql)
                    ?? PostgresError(kind: .usage, message: "statement did not start a COPY TO STDOUT", statement: sql)
            }
        }
        var rows = 0
        var bodyError: Error?
        while true {
            // One blocking call gathers many rows: a call per row would cost a thread hop each.
            let (chunk, count, finished) = try await blocking { conn -> ([UInt8], Int, Bool) in
                var chunk: [UInt8] = []
                var count = 0
                while chunk.count < 256 * 1024 {
                    var buffer: UnsafeMutablePointer<CChar>?
                    let length = PQgetCopyData(conn, &buffer, 0)
                    if length > 0, let buffer {
                        buffer.withMemoryRebound(to: UInt8.self, capacity: Int(length)) {
                            chunk.append(contentsOf: UnsafeBufferPointer(start: $0, count: Int(length)))
                        }
                        PQfreemem(buffer)
                        count += 1
                    } else if length == -1 {
                        return (chunk, count, true)
                    } else {
                        throw self.connectionError(statement: sql)
                    }
                }
                return (chunk, count, false)
            }
            rows += count
            if bodyError == nil, !chunk.isEmpty {
                do { try await body(chunk) } catch { bodyError = error }
            }
            if finished { break }
        }
        try await blocking { conn in
            var failure: PostgresError?
            while let result = PQgetResult(conn) {
                defer { PQclear(result) }
                if failure == nil { failure = Self.resultError(result, conn: conn, statement: sql) }
            }
            if let failure { throw failure }
        }
        if let bodyError { throw bodyError }
        return rows
    }

    func sendCopyData(_ bytes: [UInt8]) async throws {
        try await blocking { conn in
            let ok = bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(conn, $0.baseAddress, Int32($0.count)) }
            }
            guard ok == 1 else { throw self.connectionError(statement: "COPY data") }
        }
    }

    // MARK: - Internals

    /// Runs libpq work on the blocking pool. Deliberately ignores task cancellation: a statement
    /// once sent runs to completion, so a cancelled transaction can still send its ROLLBACK.
    private func blocking<T: Sendable>(_ work: @escaping @Sendable (OpaquePointer) throws -> T) async throws -> T {
        try await Self.runBlocking { [self] in
            try lock.withLock {
                guard !closed else {
                    throw PostgresError(kind: .usage, message: "the connection to \(endpoint) is closed")
                }
                return try work(conn)
            }
        }
    }

    private static func runBlocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            blockingPool.submit { state in
                guard case .active = state else {
                    continuation.resume(throwing: PostgresError(kind: .usage, message: "the libpq thread pool is shut down"))
                    return
                }
                continuation.resume(with: Result { try work() })
            }
        }
    }

    private func connectionError(statement: String?) -> PostgresError {
        PostgresError(kind: .connection, message: "connection to \(endpoint) failed: \(Self.lastError(conn))",
                      statement: statement)
    }

    private static func execParams(_ conn: OpaquePointer, _ sql: String, _ binds: [PostgresBind]) -> OpaquePointer? {
        let types = binds.map { Oid($0.type.oid) }
        // strdup'd copies live until PQexecParams returns.
        let cValues: [UnsafeMutablePointer<CChar>?] = binds.map { bind in bind.text.map { strdup($0) } }
        defer { cValues.forEach { free($0) } }
        guard !binds.isEmpty else { return PQexecParams(conn, sql, 0, nil, nil, nil, nil, 0) }
        return cValues.withUnsafeBufferPointer { valuesBuffer in
            valuesBuffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                PQexecParams(conn, sql, Int32(binds.count), types, values.baseAddress, nil, nil, 0)
            }
        }
    }

    private static func rows(of result: OpaquePointer?) -> PostgresRows {
        let fieldCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        let columns = (0..<fieldCount).map { String(cString: PQfname(result, Int32($0))) }
        let types = (0..<fieldCount).map { UInt32(PQftype(result, Int32($0))) }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for r in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(fieldCount)
            for f in 0..<fieldCount {
                if PQgetisnull(result, Int32(r), Int32(f)) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, Int32(r), Int32(f))))
                }
            }
            rows.append(PostgresRow(columns: columns, values: values))
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresRows(columns: columns, columnTypes: types, rows: rows, affectedRows: affected)
    }

    /// Nil when the result is a success; otherwise the error with SQLSTATE and fields.
    static func resultError(_ result: OpaquePointer?, conn: OpaquePointer, statement: String) -> PostgresError? {
        func lostConnection(_ reason: String) -> String {
            "lost the connection to PostgreSQL at \(describeEndpoint(conn)): \(reason)"
        }
        guard let result else {
            return PostgresError(kind: .connection, message: lostConnection(lastError(conn)), statement: statement)
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
            return nil
        default:
            func field(_ code: Int32) -> String? {
                guard let p = PQresultErrorField(result, code) else { return nil }
                return String(cString: p)
            }
            let sqlState = field(PG_DIAG_SQLSTATE)
            let message = field(PG_DIAG_MESSAGE_PRIMARY)
                ?? String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
            let lost = sqlState == nil && PQstatus(conn) != CONNECTION_OK
            let text = message.isEmpty ? lastError(conn) : message
            return PostgresError(kind: lost || sqlState == nil ? .connection : .server, sqlState: sqlState,
                                 message: lost ? lostConnection(text) : text,
                                 detail: field(PG_DIAG_MESSAGE_DETAIL), hint: field(PG_DIAG_MESSAGE_HINT),
                                 statement: statement, position: field(PG_DIAG_STATEMENT_POSITION).flatMap { Int($0) })
        }
    }

    static func lastError(_ conn: OpaquePointer) -> String {
        String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func describeEndpoint(_ conn: OpaquePointer) -> String {
        func text(_ p: UnsafeMutablePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
        let host = text(PQhost(conn))
        let port = text(PQport(conn))
        let db = text(PQdb(conn))
        return "\(host.isEmpty ? "localhost" : host):\(port.isEmpty ? "5432" : port)/\(db)"
    }
}

/// Buffers COPY text data and sends it in chunks of about 256 KiB.
public final class PostgresCopyWriter {
    private let connection: PostgresConnection
    private var buffer: [UInt8] = []
    private static let chunkSize = 256 * 1024

    init(connection: PostgresConnection) {
        self.connection = connection
        buffer.reserveCapacity(Self.chunkSize + 4096)
    }

    /// Appends raw COPY text (one or more complete or partial lines).
    public func write(_ text: String) async throws {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= Self.chunkSize { try await flush() }
    }

    /// Appends raw COPY text bytes (e.g. another connection's `COPY … TO STDOUT` output).
    public func write(bytes: [UInt8]) async throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.chunkSize { try await flush() }
    }

    /// Appends one row in COPY text format; each value is escaped, nil becomes `\N`.
    public func writeRow(_ values: [String?]) async throws {
        for (i, value) in values.enumerated() {
            if i > 0 { buffer.append(Self.tab) }
            if let value { Self.appendEscaped(value, to: &buffer) } else { buffer.append(contentsOf: [Self.backslash, UInt8(ascii: "N")]) }
        }
        buffer.append(Self.newline)
        if buffer.count >= Self.chunkSize { try await flush() }
    }

    func flush() async throws {
        guard !buffer.isEmpty else { return }
        let chunk = buffer
        buffer.removeAll(keepingCapacity: true)
        try await connection.sendCopyData(chunk)
    }

    /// Escapes a value for COPY text format (backslash, tab, newline, carriage return).
    public static func escape(_ value: String) -> String {
        var bytes: [UInt8] = []
        appendEscaped(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static let backslash = UInt8(ascii: "\\"), tab = UInt8(ascii: "\t")
    private static let newline = UInt8(ascii: "\n"), carriageReturn = UInt8(ascii: "\r")

    static func appendEscaped(_ value: String, to out: inout [UInt8]) {
        // Most values need no escaping: copy them whole.
        let plain = value.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard !bytes.contains(where: { $0 == backslash || $0 == tab || $0 == newline || $0 == carriageReturn }) else {
                return false
            }
            out.append(contentsOf: bytes)
            return true
        }
        if plain == true { return }
        for byte in value.utf8 {
            switch byte {
            case backslash: out.append(contentsOf: [backslash, backslash])
            case tab: out.append(contentsOf: [backslash, UInt8(ascii: "t")])
            case newline: out.append(contentsOf: [backslash, UInt8(ascii: "n")])
            case carriageReturn: out.append(contentsOf: [backslash, UInt8(ascii: "r")])
            default: out.append(byte)
            }
        }
    }
}

private final class NoticeBox: Sendable {
    let handler: (@Sendable (PostgresNotice) -> Void)?
    init(handler: (@Sendable (PostgresNotice) -> Void)?) { self.handler = handler }
}

private func noticeReceiver(_ arg: UnsafeMutableRawPointer?, _ result: OpaquePointer?) {
    guard let arg, let result else { return }
    let box = Unmanaged<NoticeBox>.fromOpaque(arg).takeUnretainedValue()
    guard let handler = box.handler else { return }
    func field(_ code: Int32) -> String { PQresultErrorField(result, code).map { String(cString: $0) } ?? "" }
    handler(PostgresNotice(severity: field(PG_DIAG_SEVERITY), message: field(PG_DIAG_MESSAGE_PRIMARY)))
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { copies.forEach { free($0) } }
    return copies.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: copies.count) { body($0) }
    }
}

// libpq's PG_DIAG_* field codes are character-literal macros, which Swift does not import.
private let PG_DIAG_SEVERITY = Int32(UInt8(ascii: "S"))
private let PG_DIAG_SQLSTATE = Int32(UInt8(ascii: "C"))
private let PG_DIAG_MESSAGE_PRIMARY = Int32(UInt8(ascii: "M"))
private let PG_DIAG_MESSAGE_DETAIL = Int32(UInt8(ascii: "D"))
private let PG_DIAG_MESSAGE_HINT = Int32(UInt8(ascii: "H"))
private let PG_DIAG_STATEMENT_POSITION = Int32(UInt8(ascii: "P"))
