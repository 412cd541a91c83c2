import Foundation

/// A Vero webhook call mapped to an email event (docs/operations.md#email-events-from-vero), named
/// as Segment's Vero source
/// names them, with Segment's email-spec properties.
public struct VeroWebhookEvent: Sendable, Equatable {
    /// Stable across Vero's retries of the same call: a hash of what identifies it.
    public var messageID: String
    /// `Email Opened`, `Email Link Clicked`, …
    public var event: String
    public var userID: String?
    public var email: String?
    /// `email_id`, `email_subject`, `campaign_id`, `campaign_name`, `link_url`, `bounce_type`
    /// when present, and the whole payload under `vero`.
    public var properties: JSONValue
    /// From the payload's `<type>_at` (or `sent_at`) Unix time; nil when it has none.
    public var occurredAt: Timestamp?

    /// A webhook body that cannot be used, and why (answered 400).
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public init(reason: String) { self.reason = reason }
        public var description: String { reason }
    }

    /// Event names by Vero's `type`; any other type becomes `Email <Type>`.
    public static let names: [String: String] = [
        "sent": "Email Sent", "delivered": "Email Delivered", "opened": "Email Opened", "clicked": "Email Link Clicked",
        "bounced": "Email Bounced", "unsubscribed": "Email Unsubscribed", "complained": "Email Marked as Spam",
    ]

    /// Maps one webhook body (Vero's JSON).
    public static func parse(_ body: [UInt8]) -> Result<VeroWebhookEvent, Invalid> {
        let payload: JSONValue
        do { payload = try JSONValue.parse(body) } catch {
            return .failure(Invalid(reason: "the body is not JSON: \(error)"))
        }
        guard payload.objectValue != nil else { return .failure(Invalid(reason: "the body must be a JSON object")) }
        // What PostgreSQL could never store is refused here (a 400, not retried), not left to fail there.
        if Self.holdsNUL(payload) {
            return .failure(Invalid(reason: "a string or member name holds a NUL (\\u0000), which cannot be stored"))
        }
        guard let type = payload["type"]?.stringValue, !type.isEmpty,
              type.allSatisfy({ $0.isLetter || $0 == "_" }) else {
            return .failure(Invalid(reason: "\"type\" must name the event, e.g. \"opened\""))
        }
        let user = payload["user"]
        let userID = user?["id"].flatMap(Self.identifier)
        let email = user?["email"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        guard userID != nil || email != nil else {
            return .failure(Invalid(reason: "\"user\" must have an \"id\" or an \"email\""))
        }
        for (field, value) in [("user.id", userID), ("user.email", email), ("type", type)] {
            if let value, value.utf8.count > SegmentMessage.maxIdentifierBytes {
                return .failure(Invalid(reason: "\(field) is \(value.utf8.count) bytes long; identifiers are limited to \(SegmentMessage.maxIdentifierBytes) bytes"))
            }
        }
        let campaign = payload["campaign"]
        var properties: [String: JSONValue] = ["vero": payload]
        properties["email_id"] = payload["message_id"].flatMap(Self.identifier).map(JSONValue.string)
        properties["email_subject"] = campaign?["subject"]
        properties["campaign_id"] = campaign?["id"]
        properties["campaign_name"] = campaign?["name"]
        properties["link_url"] = payload["url"] ?? payload["link"]?["url"]
        properties["bounce_type"] = payload["bounce_type"]
        let seconds = payload["\(type)_at"]?.numberValue ?? payload["sent_at"]?.numberValue
        let occurredAt = seconds.flatMap { s -> Timestamp? in
            guard s.isFinite, s > 0, s < 32_503_680_000 else { return nil }
            return Timestamp(microsecondsSinceEpoch: Int64(s * 1_000_000))
        }
        // What identifies the call: the same call retried hashes the same.
        let identity = [type, userID ?? "", email ?? "", payload["message_id"].flatMap(Self.identifier) ?? "",
                        campaign?["id"].flatMap(Self.identifier) ?? "", seconds.map { String($0) } ?? "",
                        properties["link_url"]?.stringValue ?? ""].joined(separator: "\u{1F}")
        let name = names[type] ?? "Email " + type.split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(separator: " ")
        return .success(VeroWebhookEvent(messageID: "vero-" + StableHash.hex(identity), event: name, userID: userID,
                                         email: email, properties: .object(properties.compactMapValues { $0 }),
                                         occurredAt: occurredAt))
    }

    /// Whether a string or a member name anywhere in `value` holds a NUL.
    static func holdsNUL(_ value: JSONValue) -> Bool {
        switch value {
        case .string(let s): s.utf8.contains(0)
        case .array(let items): items.contains(where: holdsNUL)
        case .object(let members): members.contains { $0.key.utf8.contains(0) || holdsNUL($0.value) }
        default: false
        }
    }

    /// A string or an integer id, as text.
    static func identifier(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s): s.isEmpty ? nil : s
        case .int(let i): String(i)
        default: nil
        }
    }
}
