/// A statement and its bound parameters, written as one string interpolation:
///
/// ```swift
/// let query: PostgresQuery = "SELECT * FROM engage.outbox WHERE id = \(id) AND status = \(status)"
/// // sql: SELECT * FROM engage.outbox WHERE id = $1 AND status = $2, binds: [id, status]
/// ```
///
/// Every interpolated value becomes a bound `$n`; nothing a caller passes is spliced into the
/// text. SQL text itself is interpolated only through the visibly different
/// `\(unescaped: …)`, for identifiers and fragments the code builds, never for values. A query
/// interpolated into another keeps its parameters (they are renumbered), so statements can be
/// composed from fragments (`FROM (\(compiled)) q`).
public struct PostgresQuery: Sendable, Equatable, ExpressibleByStringInterpolation, CustomStringConvertible {
    enum Piece: Sendable, Equatable {
        case text(String)
        /// An index into `binds`.
        case parameter(Int)
    }

    private(set) var pieces: [Piece] = []
    /// The parameters, in `$1…$n` order.
    public private(set) var binds: [PostgresBind] = []

    public init() {}

    public init(stringLiteral value: String) {
        pieces = [.text(value)]
    }

    public init(stringInterpolation: StringInterpolation) {
        self = stringInterpolation.query
    }

    /// A statement written with its own `$n` placeholders, for text that is not in the source
    /// (a migration file) or an ad-hoc statement with a few parameters. Code with values to bind
    /// interpolates them instead.
    public init(unsafeSQL sql: String, binds: [any PostgresEncodable] = []) {
        pieces = [.text(sql)]
        self.binds = binds.map(\.postgresBind)
        rendersItsOwnPlaceholders = !binds.isEmpty
    }

    /// Set when the text carries hand-written placeholders: nothing may be appended after
    /// binds of its own, or the numbering would clash.
    private var rendersItsOwnPlaceholders = false

    /// The statement text, with `$1…$n` for the parameters.
    public var sql: String {
        var text = ""
        for piece in pieces {
            switch piece {
            case .text(let s): text += s
            case .parameter(let i): text += "$\(i + 1)"
            }
        }
        return text
    }

    public var description: String { sql }

    /// Appends SQL text.
    public mutating func append(unescaped sql: String) {
        pieces.append(.text(sql))
    }

    /// Appends a bound parameter.
    public mutating func append(bind value: some PostgresEncodable) {
        precondition(!rendersItsOwnPlaceholders, "a PostgresQuery(unsafeSQL:binds:) cannot take more parameters")
        pieces.append(.parameter(binds.count))
        binds.append(value.postgresBind)
    }

    /// Appends another query, renumbering its parameters after this one's.
    public mutating func append(_ other: PostgresQuery) {
        precondition(!rendersItsOwnPlaceholders && !other.rendersItsOwnPlaceholders,
                     "a PostgresQuery(unsafeSQL:binds:) cannot be composed")
        let offset = binds.count
        for piece in other.pieces {
            switch piece {
            case .text(let s): pieces.append(.text(s))
            case .parameter(let i): pieces.append(.parameter(i + offset))
            }
        }
        binds += other.binds
    }

    /// Joins queries with a separator (`AND`, `,\n`), keeping every parameter.
    public static func joined(_ queries: [PostgresQuery], separator: String) -> PostgresQuery {
        var result = PostgresQuery()
        for (i, query) in queries.enumerated() {
            if i > 0 { result.append(unescaped: separator) }
            result.append(query)
        }
        return result
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var query = PostgresQuery()

        public init(literalCapacity: Int, interpolationCount: Int) {}

        public mutating func appendLiteral(_ literal: String) {
            query.append(unescaped: literal)
        }

        /// A value, bound as a parameter (`$n`).
        public mutating func appendInterpolation(_ value: some PostgresEncodable) {
            query.append(bind: value)
        }

        /// An optional value: bound as a parameter, NULL when nil.
        public mutating func appendInterpolation<Value: PostgresEncodable>(_ value: Value?) {
            query.append(bind: value)
        }

        /// SQL text the code built (an identifier, a fragment), spliced as it is.
        public mutating func appendInterpolation(unescaped sql: String) {
            query.append(unescaped: sql)
        }

        /// Another query, with its parameters.
        public mutating func appendInterpolation(_ other: PostgresQuery) {
            query.append(other)
        }
    }
}
