import Foundation

/// A Segment-spec call (identify, track, page, screen, group, alias), as the outbox stores it
/// and as `ingest`/`forward` read it from NDJSON. Unknown fields are ignored.
public struct SegmentMessage: Sendable, Hashable {
    public enum Kind: String, Sendable, CaseIterable {
        case identify, track, page, screen, group, alias
    }

    public var type: Kind
    public var messageId: String?
    public var userId: String?
    public var anonymousId: String?
    public var previousId: String?
    public var groupId: String?
    /// `track`: the event name.
    public var event: String?
    /// `page`/`screen`: the name.
    public var name: String?
    public var traits: [String: JSONValue]
    public var properties: [String: JSONValue]
    public var context: [String: JSONValue]
    public var integrations: [String: JSONValue]
    /// The original timestamp text, and its parsed value.
    public var timestamp: Date?

    /// `context.traits.email` when it is a string.
    public var contextEmail: String? { context["traits"]?["email"]?.stringValue }

    /// Options for Vero under `integrations.Vero` (or `integrations.vero`).
    public var veroOptions: JSONValue? { integrations["Vero"] ?? integrations["vero"] }

    /// Why a JSON document is not a Segment call.
    public struct DecodingError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// Decodes a parsed JSON object; throws with a reason when it is not a usable call.
    public init(json: JSONValue) throws {
        guard let object = json.objectValue else {
            throw DecodingError(reason: "a message must be a JSON object, got \(json.typeName)")
        }
        guard let rawType = object["type"] else { throw DecodingError(reason: "missing \"type\"") }
        guard let typeName = rawType.stringValue, let type = Kind(rawValue: typeName.lowercased()) else {
            throw DecodingError(reason: "unknown type \(rawType.jsonString) (expected one of \(Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        self.type = type
        /// Ids may arrive as numbers; Segment's libraries stringify them.
        func id(_ key: String) throws -> String? {
            switch object[key] {
            case nil, .null?: return nil
            case .string(let s)?: return s.isEmpty ? nil : s
            case .int(let i)?: return String(i)
            case let other?: throw DecodingError(reason: "\"\(key)\" must be a string, got \(other.typeName)")
            }
        }
        func dictionary(_ key: String) throws -> [String: JSONValue] {
            switch object[key] {
            case nil, .null?: return [:]
            case .object(let o)?: return o
            case let other?: throw DecodingError(reason: "\"\(key)\" must be an object, got \(other.typeName)")
            }
        }
        messageId = try id("messageId")
        userId = try id("userId")
        anonymousId = try id("anonymousId")
        previousId = try id("previousId")
        groupId = try id("groupId")
        traits = try dictionary("traits")
        properties = try dictionary("properties")
        context = try dictionary("context")
        integrations = try dictionary("integrations")
        name = object["name"]?.stringValue
        if type == .track {
            guard let event = object["event"]?.stringValue, !event.isEmpty else {
                throw DecodingError(reason: "a track call needs a non-empty \"event\"")
            }
            self.event = event
        }
        switch object["timestamp"] ?? object["originalTimestamp"] {
        case nil, .null?:
            timestamp = nil
        case .string(let text)?:
            guard let date = SegmentTimestamp.parse(text) else {
                throw DecodingError(reason: "\"timestamp\" is not an ISO-8601 date: \(text.prefix(40).debugDescription)")
            }
            timestamp = date
        case let other?:
            throw DecodingError(reason: "\"timestamp\" must be an ISO-8601 string, got \(other.typeName)")
        }
    }

    /// Parses one NDJSON line.
    public init(line: String) throws {
        let json: JSONValue
        do { json = try JSONValue.parse(line) } catch {
            throw DecodingError(reason: "\(error)")
        }
        try self.init(json: json)
    }

    /// A call and its `properties` and `traits` objects as their original JSON text (nil when
    /// absent or empty), for a loader that stores them as they came instead of re-encoding them.
    public struct WithPayloads: Sendable {
        public var message: SegmentMessage
        public var propertiesJSON: String?
        public var traitsJSON: String?
    }

    /// Parses one NDJSON line, keeping the text of `properties` and `traits`.
    public static func parseKeepingPayloads(_ line: [UInt8]) throws -> WithPayloads {
        let (json, texts): (JSONValue, [String?]) = try line.withUnsafeBufferPointer { buffer in
            let parsed: (value: JSONValue, ranges: [Range<Int>?])
            do { parsed = try JSONReader.parse(buffer, locating: ["properties", "traits"]) } catch {
                throw DecodingError(reason: "\(error)")
            }
            return (parsed.value, parsed.ranges.map { range in
                range.map { String(decoding: UnsafeBufferPointer(rebasing: buffer[$0]), as: UTF8.self) }
            })
        }
        let message = try SegmentMessage(json: json)
        return WithPayloads(message: message, propertiesJSON: message.properties.isEmpty ? nil : texts[0],
                            traitsJSON: message.traits.isEmpty ? nil : texts[1])
    }
}

/// Segment timestamps: ISO-8601 with or without fractional seconds; a bare year or date
/// (as in Segment's own fixtures, `"2014"`) is read as its first instant, UTC.
public enum SegmentTimestamp {
    /// `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`, `YYYY-MM-DD`, or `YYYY`. Hand-written: it runs
    /// for every row delivered or ingested, and a date formatter per call costs far more.
    public static func parse(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func digits(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= b.count else { return nil }
            var n = 0
            for i in from..<(from + count) {
                guard b[i] >= 0x30, b[i] <= 0x39 else { return nil }
                n = n * 10 + Int(b[i] - 0x30)
            }
            return n
        }
        guard let year = digits(0, 4), year > 0 else { return nil }
        if b.count == 4 { return make(year, 1, 1, 0, 0, 0, 0, 0) }
        guard b.count >= 10, b[4] == 0x2D, b[7] == 0x2D, let month = digits(5, 2), let day = digits(8, 2),
              (1...12).contains(month), (1...31).contains(day) else { return nil }
        if b.count == 10 { return make(year, month, day, 0, 0, 0, 0, 0) }
        guard b.count >= 20, b[10] == 0x54 || b[10] == 0x74 || b[10] == 0x20, b[13] == 0x3A, b[16] == 0x3A,
              let hour = digits(11, 2), let minute = digits(14, 2), let second = digits(17, 2),
              hour < 24, minute < 60, second < 61 else { return nil }
        var i = 19
        var fraction = 0.0
        if i < b.count, b[i] == 0x2E {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                fraction += Double(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var offset = 0
        if b[i] == 0x5A || b[i] == 0x7A {
            i += 1
        } else if b[i] == 0x2B || b[i] == 0x2D {
            let sign = b[i] == 0x2D ? -1 : 1
            guard let oh = digits(i + 1, 2) else { return nil }
            var j = i + 3
            var om = 0
            if j < b.count, b[j] == 0x3A { j += 1 }
            if let m = digits(j, 2) { om = m; j += 2 }
            offset = sign * (oh * 3600 + om * 60)
            i = j
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        return make(year, month, day, hour, minute, second, fraction, offset)
    }

    private static func make(_ year: Int, _ month: Int, _ day: Int, _ hour: Int, _ minute: Int, _ second: Int,
                             _ fraction: Double, _ offset: Int) -> Date {
        // Days from civil (Howard Hinnant's algorithm): no calendar object needed.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    /// `2025-06-01T12:00:00.000Z`
    public static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
