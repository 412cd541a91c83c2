/// An error from PostgreSQL or from libpq, with the context needed to act on it.
///
/// Never carries a password: connection errors name host, port and database only.
public struct PostgresError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, broadly.
    public enum Kind: String, Sendable {
        /// Could not connect, or the connection was lost.
        case connection
        /// The server rejected a statement (see ``sqlState``).
        case server
        /// A value could not be decoded into the requested Swift type.
        case decoding
        /// The binding was used in a way it does not support.
        case usage
    }

    public var kind: Kind
    /// The five-character SQLSTATE, e.g. `23505` for a unique violation.
    public var sqlState: String?
    /// The primary, human-readable message.
    public var message: String
    public var detail: String?
    public var hint: String?
    /// The statement that failed, shortened to 200 characters.
    public var statement: String?
    /// Where in the statement the error is, a 1-based character index (a syntax error's).
    public var position: Int?

    public init(kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil,
                hint: String? = nil, statement: String? = nil, position: Int? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.statement = statement.map { $0.count > 200 ? String($0.prefix(200)) + "…" : $0 }
        self.position = position
    }

    /// SQLSTATE codes the engine and its tests name (PostgreSQL's appendix A).
    public enum SQLState {
        /// Class 08: the connection failed or was lost.
        public static let connectionExceptionClass = "08"
        public static let adminShutdown = "57P01"
        public static let crashShutdown = "57P02"
        public static let cannotConnectNow = "57P03"
        public static let uniqueViolation = "23505"
        public static let invalidTextRepresentation = "22P02"
        public static let queryCanceled = "57014"
        public static let insufficientPrivilege = "42501"
        public static let readOnlySQLTransaction = "25006"
    }

    /// True for SQLSTATE class 08 (connection exception) and 57P01..57P03 (the server shutting
    /// down or starting up).
    public var isConnectionFailure: Bool {
        if kind == .connection { return true }
        guard let s = sqlState else { return false }
        return s.hasPrefix(SQLState.connectionExceptionClass)
            || [SQLState.adminShutdown, SQLState.crashShutdown, SQLState.cannotConnectNow].contains(s)
    }

    public var description: String {
        var parts: [String] = []
        if let sqlState { parts.append("PostgreSQL error \(sqlState): \(message)") } else { parts.append(message) }
        if let detail { parts.append("detail: \(detail)") }
        if let hint { parts.append("hint: \(hint)") }
        if let statement { parts.append("in: \(statement.replacingOccurrences(of: "\n", with: " "))") }
        return parts.joined(separator: "; ")
    }
}
