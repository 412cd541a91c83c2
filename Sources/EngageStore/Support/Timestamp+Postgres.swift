import EngageCore
import PostgresClient

/// A ``Timestamp`` binds as a `timestamptz` in ISO-8601 UTC with six fractional digits, so
/// PostgreSQL reads the exact microsecond whatever the session's `TimeZone`.
extension Timestamp: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: iso8601, type: .timestamptz) }
}

/// A definition's kind as `engage.computations.type` stores it.
extension Definition.Kind: PostgresDecodable {}
