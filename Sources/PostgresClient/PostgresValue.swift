import Foundation

/// A parameter type: its OID (sent with the value) and its SQL name (for `PREPARE`).
public struct PostgresType: Sendable, Hashable {
    public var oid: UInt32
    public var name: String

    public init(oid: UInt32, name: String) {
        self.oid = oid
        self.name = name
    }

    /// Sent without a type, so PostgreSQL infers it from the context (`$1::jsonb`, a column);
    /// declared `text` in a `PREPARE`.
    public static let unknown = PostgresType(oid: 0, name: "text")
    public static let bool = PostgresType(oid: 16, name: "boolean")
    public static let int8 = PostgresType(oid: 20, name: "bigint")
    public static let int4 = PostgresType(oid: 23, name: "integer")
    public static let float8 = PostgresType(oid: 701, name: "double precision")
    public static let textArray = PostgresType(oid: 1009, name: "text[]")
    public static let timestamptz = PostgresType(oid: 1184, name: "timestamptz")
    public static let uuid = PostgresType(oid: 2950, name: "uuid")
    public static let jsonb = PostgresType(oid: 3802, name: "jsonb")
}

/// A parameter value bound to `$n`: its text form and the type it is sent with.
///
/// Values are always bound, never spliced into SQL. Strings are sent with the "unknown" type
/// so that PostgreSQL infers the type from the context (`$1::jsonb`, a `timestamptz` column, ...).
public struct PostgresBind: Sendable, Hashable {
    public var text: String?
    public var type: PostgresType

    public init(text: String?, type: PostgresType = .unknown) {
        self.text = text
        self.type = type
    }

    public static let null = PostgresBind(text: nil)
}

/// A Swift value that can be bound as a query parameter.
public protocol PostgresEncodable: Sendable {
    var postgresBind: PostgresBind { get }
}

extension PostgresBind: PostgresEncodable {
    public var postgresBind: PostgresBind { self }
}

extension String: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: self) }
}

extension Substring: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: String(self)) }
}

extension Int: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: String(self), type: .int8) }
}

extension Int64: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: String(self), type: .int8) }
}

extension Int32: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: String(self), type: .int4) }
}

extension Double: PostgresEncodable {
    public var postgresBind: PostgresBind {
        if isNaN { return PostgresBind(text: "NaN", type: .float8) }
        if isInfinite { return PostgresBind(text: self > 0 ? "Infinity" : "-Infinity", type: .float8) }
        return PostgresBind(text: "\(self)", type: .float8)
    }
}

extension Bool: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: self ? "t" : "f", type: .bool) }
}

extension Date: PostgresEncodable {
    public var postgresBind: PostgresBind {
        PostgresBind(text: PostgresTime.format(self), type: .timestamptz)
    }
}

extension UUID: PostgresEncodable {
    public var postgresBind: PostgresBind { PostgresBind(text: uuidString.lowercased(), type: .uuid) }
}

extension Array: PostgresEncodable where Element == String {
    /// A `text[]`, encoded as an array literal with every element quoted.
    public var postgresBind: PostgresBind {
        let items = map { item -> String in
            var escaped = "\""
            for ch in item.unicodeScalars {
                if ch == "\"" || ch == "\\" { escaped.unicodeScalars.append("\\") }
                escaped.unicodeScalars.append(ch)
            }
            return escaped + "\""
        }
        return PostgresBind(text: "{" + items.joined(separator: ",") + "}", type: .textArray)
    }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresBind: PostgresBind {
        switch self {
        case .none: return .null
        case .some(let value): return value.postgresBind
        }
    }
}

/// A `jsonb` parameter, from raw JSON bytes or an `Encodable` value.
public struct PostgresJSON: PostgresEncodable, Sendable {
    public var json: String

    public init(rawJSON: String) { self.json = rawJSON }

    public init(data: Data) { self.json = String(decoding: data, as: UTF8.self) }

    public init<T: Encodable>(encoding value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        self.json = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    public var postgresBind: PostgresBind { PostgresBind(text: json, type: .jsonb) }
}

/// Text-format timestamps as PostgreSQL prints them with `DateStyle=ISO` and `TimeZone=UTC`.
enum PostgresTime {
    static func format(_ date: Date) -> String {
        // Microsecond precision, UTC, ISO-8601: PostgreSQL's own precision.
        let micros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        let seconds = Int64((micros / 1_000_000).rounded(.down))
        let fraction = Int64(micros) - seconds * 1_000_000
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00",
                      Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), fraction)
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM]` (the session time zone is UTC).
    static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= bytes.count else { return nil }
            var n = 0
            for b in bytes[from..<(from + count)] {
                guard b >= 48 && b <= 57 else { return nil }
                n = n * 10 + Int(b - 48)
            }
            return n
        }
        guard bytes.count >= 19, let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2) else { return nil }
        var index = 19
        var fraction = 0.0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 0.1
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                fraction += Double(bytes[index] - 48) * scale
                scale /= 10
                index += 1
            }
        }
        var offset = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            guard let h = number(index + 1, 2) else { return nil }
            var m = 0
            if index + 3 < bytes.count, bytes[index + 3] == UInt8(ascii: ":"), let mm = number(index + 4, 2) { m = mm }
            offset = sign * (h * 3600 + m * 60)
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epoch = timegm(&parts)
        return Date(timeIntervalSince1970: Double(epoch - offset) + fraction)
    }
}

/// A string enum binds as its raw value (a run's status, a mode).
extension PostgresEncodable where Self: RawRepresentable, RawValue == String {
    public var postgresBind: PostgresBind { PostgresBind(text: rawValue) }
}
