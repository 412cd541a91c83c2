import NIOConcurrencyHelpers

/// The transaction a ``PostgresConnection/withTransaction(_:)`` body runs in: its connection,
/// and the way to end it with a rollback while still returning a value.
public final class PostgresTransaction: Sendable {
    /// The connection the transaction is on; hand it to stores that run statements in it.
    public let connection: PostgresConnection
    private let rollbackRequested = NIOLockedValueBox(false)

    init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// Ends the transaction with a rollback instead of a commit when the body returns (a dry
    /// run, a run the guardrail blocks). The body's value is still returned.
    public func rollback() {
        rollbackRequested.withLockedValue { $0 = true }
    }

    var rollsBack: Bool { rollbackRequested.withLockedValue { $0 } }

    /// ``PostgresConnection/query(_:)`` on the transaction's connection.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await connection.query(query)
    }

    /// ``PostgresConnection/execute(_:)`` on the transaction's connection.
    public func execute(_ statements: PostgresQuery) async throws {
        try await connection.execute(statements)
    }
}

/// A transaction that failed in itself, not (only) in its body: which phase, and why.
public struct PostgresTransactionError: Error, CustomStringConvertible, Sendable {
    public enum Phase: String, Sendable {
        /// `BEGIN` (or `SAVEPOINT`) failed: nothing ran.
        case begin
        /// The body threw, and the rollback after it failed too (``rollbackError``).
        case body
        /// `COMMIT` (or `RELEASE SAVEPOINT`) failed: nothing was committed.
        case commit
        /// The rollback the body asked for failed.
        case rollback
    }

    public var phase: Phase
    /// The error of that phase (for `body`, the body's own error).
    public var underlying: any Error
    /// For `body`: why the rollback that followed failed.
    public var rollbackError: (any Error)?

    public init(phase: Phase, underlying: any Error, rollbackError: (any Error)? = nil) {
        self.phase = phase
        self.underlying = underlying
        self.rollbackError = rollbackError
    }

    public var description: String {
        switch phase {
        case .body:
            return "\(underlying)" + (rollbackError.map { "; the rollback failed too: \($0)" } ?? "")
        default:
            return "the transaction failed at \(phase.rawValue): \(underlying)"
        }
    }

    /// True when the connection is gone (see ``PostgresError/isConnectionFailure``).
    public var isConnectionFailure: Bool {
        (underlying as? PostgresError)?.isConnectionFailure ?? false
    }
}
