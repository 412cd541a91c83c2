import Foundation

/// A Swift type that can be decoded from a column's text form.
public protocol PostgresDecodable: Sendable {
    /// Decodes from PostgreSQL's text output; returns nil when the text is not of this type.
    init?(postgresText text: String)
}

/// A string enum decodes from its raw value; any other text is a decoding error.
extension PostgresDecodable where Self: RawRepresentable, RawValue == String {
    public init?(postgresText text: String) { self.init(rawValue: text) }
}

extension String: PostgresDecodable {
    public init?(postgresText text: String) { self = text }
}

extension Int: PostgresDecodable {
    public init?(postgresText text: String) { self.init(text) }
}

extension Int64: PostgresDecodable {
    public init?(postgresText text: String) { self.init(text) }
}

extension Int32: PostgresDecodable {
    public init?(postgresText text: String) { self.init(text) }
}

extension Double: PostgresDecodable {
    public init?(postgresText text: String) {
        switch text {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default: self.init(text)
        }
    }
}

extension Bool: PostgresDecodable {
    public init?(postgresText text: String) {
        switch text {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

extension Date: PostgresDecodable {
    public init?(postgresText text: String) {
        guard let date = PostgresTime.parse(text) else { return nil }
        self = date
    }
}

extension UUID: PostgresDecodable {
    public init?(postgresText text: String) { self.init(uuidString: text) }
}

extension Data: PostgresDecodable {
    /// The raw bytes of the text form (for `json`/`jsonb` columns: the JSON document).
    public init?(postgresText text: String) { self = Data(text.utf8) }
}

extension Array: PostgresDecodable where Element == String {
    /// Parses a one-dimensional `text[]` literal such as `{a,"b c",NULL}`. NULL elements are
    /// not representable here and make decoding fail.
    public init?(postgresText text: String) {
        guard let parsed = PostgresArrayLiteral.parse(text) else { return nil }
        var out: [String] = []
        for item in parsed {
            guard let item else { return nil }
            out.append(item)
        }
        self = out
    }
}

enum PostgresArrayLiteral {
    static func parse(_ text: String) -> [String?]? {
        let scalars = Array(text.unicodeScalars)
        guard scalars.first == "{", scalars.last == "}" else { return nil }
        var items: [String?] = []
        var i = 1
        let end = scalars.count - 1
        if end == 1 { return [] }
        while i <= end {
            var item = String.UnicodeScalarView()
            var quoted = false
            if scalars[i] == "\"" {
                quoted = true
                i += 1
                while i < end, scalars[i] != "\"" {
                    if scalars[i] == "\\" { i += 1 }
                    guard i < end else { return nil }
                    item.append(scalars[i])
                    i += 1
                }
                i += 1 // closing quote
            } else {
                while i < end, scalars[i] != "," {
                    item.append(scalars[i])
                    i += 1
                }
            }
            let value = String(item)
            items.append(!quoted && value == "NULL" ? nil : value)
            i += 1 // the comma or the closing brace
        }
        return items
    }
}

/// One result row. Values are kept in PostgreSQL's text form and decoded on access.
public struct PostgresRow: Sendable {
    public let columns: [String]
    public let values: [String?]

    /// The raw text of a column by position, nil for SQL NULL.
    public subscript(_ index: Int) -> String? { values[index] }

    /// The raw text of a column by name, nil for SQL NULL or an unknown column.
    public subscript(_ name: String) -> String? {
        guard let index = columns.firstIndex(of: name) else { return nil }
        return values[index]
    }

    /// Decodes a non-NULL column; throws a decoding error naming the column when it is NULL
    /// or not of the requested type.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, _ name: String) throws -> T {
        guard let value = try decode(T?.self, name) else {
            throw PostgresError(kind: .decoding, message: "column \(name) is NULL, expected \(T.self)")
        }
        return value
    }

    /// Decodes a column that may be NULL.
    public func decode<T: PostgresDecodable>(_ type: T?.Type = T?.self, _ name: String) throws -> T? {
        guard let index = columns.firstIndex(of: name) else {
            throw PostgresError(kind: .decoding, message: "no column named \(name) in the result")
        }
        guard let text = values[index] else { return nil }
        guard let value = T(postgresText: text) else {
            throw PostgresError(kind: .decoding,
                                message: "column \(name): cannot decode \(T.self) from \(text.prefix(80).debugDescription)")
        }
        return value
    }

    /// Decodes a `json`/`jsonb` column into a `Decodable` type.
    public func decodeJSON<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
        let data: Data = try decode(Data.self, name)
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw PostgresError(kind: .decoding, message: "column \(name): invalid JSON for \(T.self): \(error)")
        }
    }
}

/// The rows of a query plus the command tag's row count (for INSERT/UPDATE/DELETE).
public struct PostgresRows: Sendable, Sequence {
    public let columns: [String]
    /// Each column's type, as its `pg_type` OID (25 for `text`), in the order of ``columns``.
    public let columnTypes: [UInt32]
    public let rows: [PostgresRow]
    /// Rows affected, from the command tag (`INSERT 0 5` → 5); 0 when the tag has no count.
    public let affectedRows: Int

    public func makeIterator() -> IndexingIterator<[PostgresRow]> { rows.makeIterator() }
    public var count: Int { rows.count }
    public var first: PostgresRow? { rows.first }
    public var isEmpty: Bool { rows.isEmpty }
}
