import Foundation

/// The Segment call of one audience or trait change (docs/architecture.md#how-syncs-behave), built from what the outbox
/// stores per row (the Vero id, the email, the value, which call) and what is constant for the
/// run (the definition, the instant, the space). The one place the call's shape is written.
public struct AudienceCall: Sendable, Hashable {
    /// `identify` (the default), or `track` (`send_as: "track"`: Audience Entered / Exited).
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case identify, track
    }

    public var kind: Kind
    /// `engage-` and a stable hash of destination, key, profile, value, run, call and Vero id.
    public var messageID: String
    /// The run's instant.
    public var timestamp: Date
    /// The Vero id the call addresses.
    public var userID: String
    public var email: String?
    /// The definition's key: the trait Vero receives.
    public var key: String
    public var value: JSONValue
    public var computationClass: Definition.Kind
    public var computationID: Int
    public var spaceID: String

    public init(kind: Kind, messageID: String, timestamp: Date, userID: String, email: String?, key: String,
                value: JSONValue, computationClass: Definition.Kind, computationID: Int, spaceID: String) {
        self.kind = kind
        self.messageID = messageID
        self.timestamp = timestamp
        self.userID = userID
        self.email = email
        self.key = key
        self.value = value
        self.computationClass = computationClass
        self.computationID = computationID
        self.spaceID = spaceID
    }

    /// The call as JSON, exactly as docs/architecture.md#how-syncs-behave writes it.
    public var json: JSONValue {
        let personas: JSONValue = [
            "computation_class": .string(computationClass.rawValue), "computation_id": .string(String(computationID)),
            "computation_key": .string(key), "namespace": .string(spaceID), "space_id": .string(spaceID),
        ]
        var call: [String: JSONValue] = [
            "type": .string(kind.rawValue), "messageId": .string(messageID), "userId": .string(userID),
            "timestamp": .string(Self.millisecondTimestamp(timestamp)),
            "integrations": ["All": false, "Vero": true],
        ]
        switch kind {
        case .identify:
            var traits: [String: JSONValue] = [key: value]
            if let email { traits["email"] = .string(email) }
            call["traits"] = .object(traits)
            call["context"] = ["personas": personas]
        case .track:
            call["event"] = value == .bool(true) ? "Audience Entered" : "Audience Exited"
            call["properties"] = .object(["audience_key": .string(key), key: value])
            var context: [String: JSONValue] = ["personas": personas]
            if let email { context["traits"] = ["email": .string(email)] }
            call["context"] = .object(context)
        }
        return .object(call)
    }

    /// The call as a ``SegmentMessage``, for the Vero mapper.
    public var message: SegmentMessage {
        get throws { try SegmentMessage(json: json) }
    }

    /// `2025-06-01T12:00:00.000Z`: milliseconds, UTC, as Segment's libraries write timestamps.
    static func millisecondTimestamp(_ date: Date) -> String {
        let iso = Timestamp(date).iso8601 // 2025-06-01T12:00:00.123456Z
        return String(iso.prefix(23)) + "Z"
    }
}
