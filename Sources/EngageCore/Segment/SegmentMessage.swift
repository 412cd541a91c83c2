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

    /// The longest identifier a message may carry (user, anonymous, previous, message and group
    /// ids, an event or page name, an email), in UTF-8 bytes: well under what PostgreSQL can
    /// index (about 2,700 bytes), so a stored identifier never fails a load.
    public static let maxIdentifierBytes = 1024

    /// Nil when `value` fits ``maxIdentifierBytes``, else why not (naming `field`).
    static func identifierProblem(_ field: String, _ value: String) -> String? {
        let bytes = value.utf8.count
        return bytes > maxIdentifierBytes
            ? "\"\(field)\" is \(bytes) bytes long; identifiers are limited to \(maxIdentifierBytes) bytes" : nil
    }

    /// The first identifier of this message longer than ``maxIdentifierBytes`` (ids, event or
    /// page name, `traits.email`), as a reason; nil when all fit. `ingest` refuses such a line.
    public var identifierProblem: String? {
        let fields: [(String, String?)] = [("userId", userId), ("anonymousId", anonymousId), ("previousId", previousId),
                                           ("messageId", messageId), ("groupId", groupId), ("event", event), ("name", name),
                                           ("traits.email", traits["email"]?.stringValue)]
        for case let (field, value?) in fields {
            if let problem = Self.identifierProblem(field, value) { return problem }
        }
        return nil
    }

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
            guard let date = Timestamp.parse(text)?.date else {
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
