import Foundation

/// One HTTP request to the Vero Track API. The body never holds the auth token: the transport
/// adds `auth_token` at send time, so a stored request carries no secret.
public struct VeroRequest: Sendable, Hashable, Codable {
    public enum Method: String, Sendable, Codable { case POST, PUT }
    public var method: Method
    /// Under the base URL, e.g. `/api/v2/users/track`.
    public var path: String
    public var body: [String: JSONValue]

    public init(method: Method, path: String, body: [String: JSONValue]) {
        self.method = method
        self.path = path
        self.body = body
    }
}

/// Why a Segment call is not sent to Vero (recorded, never retried).
public struct VeroRejection: Error, Sendable, Hashable, CustomStringConvertible {
    /// The reason, as recorded in `engage.outbox.reason` (before the detail).
    public enum Code: String, Sendable, CaseIterable {
        /// Vero needs a user id and the call has none.
        case missingUserID = "missing_user_id"
        /// An alias without `previousId`.
        case missingPreviousID = "missing_previous_id"
        /// `integrations.Vero.tags` is malformed.
        case invalidTags = "invalid_tags"
        /// A call type Segment's Vero destination does not map (screen).
        case unsupportedType = "unsupported_type"
        /// The stored call is not a Segment message at all.
        case invalidMessage = "invalid_message"
    }

    public var code: Code
    public var detail: String?

    public init(code: Code, detail: String? = nil) {
        self.code = code
        self.detail = detail
    }

    public var description: String { detail.map { "\(code.rawValue): \($0)" } ?? code.rawValue }
}

/// Segment call → Vero requests, reproducing Segment's server-side Vero destination
/// (docs/architecture.md#the-vero-mapping). Pure. The second request, when there is one, is the tags edit, to be sent
/// only after the first succeeded.
public enum VeroMapper {
    public static func map(_ message: SegmentMessage) -> Result<[VeroRequest], VeroRejection> {
        let tags: VeroRequest?
        do {
            tags = try tagsRequest(message)
        } catch let rejection as VeroRejection {
            return .failure(rejection)
        } catch {
            return .failure(VeroRejection(code: .invalidTags, detail: "\(error)"))
        }
        let main: VeroRequest
        switch mainRequest(message) {
        case .success(let request): main = request
        case .failure(let rejection): return .failure(rejection)
        }
        return .success(tags.map { [main, $0] } ?? [main])
    }

    static func mainRequest(_ m: SegmentMessage) -> Result<VeroRequest, VeroRejection> {
        let missingUserID = VeroRejection(code: .missingUserID, detail: "Vero needs a user id; the \(m.type.rawValue) call has no userId")
        switch m.type {
        case .identify:
            guard let userId = m.userId else { return .failure(missingUserID) }
            var body: [String: JSONValue] = ["id": .string(userId)]
            if let email = m.traits["email"]?.stringValue ?? (isEmail(userId) ? userId : nil) {
                body["email"] = .string(email)
            }
            var data = m.traits
            data["id"] = .string(userId)
            body["data"] = .object(data)
            return .success(VeroRequest(method: .POST, path: "/api/v2/users/track", body: body))

        case .track:
            let event = m.event ?? ""
            let lowered = event.lowercased()
            if lowered == "unsubscribe" || lowered == "resubscribe" {
                // The id may come from properties.id (as Segment documents for Unsubscribe).
                let id = m.properties["id"].flatMap(idText) ?? m.userId
                guard let id else { return .failure(missingUserID) }
                return .success(VeroRequest(method: .POST, path: "/api/v2/users/\(lowered)", body: ["id": .string(id)]))
            }
            guard let userId = m.userId else { return .failure(missingUserID) }
            return .success(eventRequest(m, userId: userId, name: event, data: .object(m.properties)))

        case .page:
            guard let userId = m.userId else { return .failure(missingUserID) }
            let url = m.properties["url"] ?? m.context["page"]?["url"] ?? .null
            return .success(eventRequest(m, userId: userId, name: "viewed_page", data: .object(["url": url])))

        case .screen:
            return .failure(VeroRejection(code: .unsupportedType,
                                          detail: "screen calls have no Vero mapping (Segment's Vero destination does not send them)"))

        case .group:
            guard let userId = m.userId else { return .failure(missingUserID) }
            var group = m.traits
            group["email"] = nil
            return .success(VeroRequest(method: .PUT, path: "/api/v2/users/edit",
                                        body: ["id": .string(userId), "changes": .object(["group": .object(group)])]))

        case .alias:
            guard let previousId = m.previousId else {
                return .failure(VeroRejection(code: .missingPreviousID, detail: "an alias call needs previousId"))
            }
            guard let userId = m.userId else { return .failure(missingUserID) }
            return .success(VeroRequest(method: .PUT, path: "/api/v2/users/reidentify",
                                        body: ["id": .string(previousId), "new_id": .string(userId)]))
        }
    }

    static func eventRequest(_ m: SegmentMessage, userId: String, name: String, data: JSONValue) -> VeroRequest {
        var identity: [String: JSONValue] = ["id": .string(userId)]
        if let email = m.contextEmail { identity["email"] = .string(email) }
        var extras: [String: JSONValue] = ["source": .string("segment")]
        if let timestamp = m.timestamp { extras["created_at"] = .int(Int(timestamp.timeIntervalSince1970.rounded(.down))) }
        return VeroRequest(method: .POST, path: "/api/v2/events/track",
                           body: ["identity": .object(identity), "event_name": .string(name), "data": data,
                                  "extras": .object(extras)])
    }

    /// `integrations.Vero.tags = {id?, action: "add"|"remove", values: [...]}` → the tags edit.
    static func tagsRequest(_ m: SegmentMessage) throws -> VeroRequest? {
        guard let options = m.veroOptions, let raw = options["tags"] else { return nil }
        func invalid(_ detail: String) -> VeroRejection { VeroRejection(code: .invalidTags, detail: detail) }
        guard let tags = raw.objectValue else { throw invalid("integrations.Vero.tags must be an object, got \(raw.typeName)") }
        guard let action = tags["action"]?.stringValue, action == "add" || action == "remove" else {
            throw invalid("integrations.Vero.tags.action must be \"add\" or \"remove\", got \(tags["action"]?.jsonString ?? "nothing")")
        }
        guard let values = tags["values"]?.arrayValue else {
            throw invalid("integrations.Vero.tags.values must be an array, got \(tags["values"]?.typeName ?? "nothing")")
        }
        guard values.allSatisfy({ $0.stringValue != nil }) else {
            throw invalid("integrations.Vero.tags.values must hold strings only")
        }
        let id = tags["id"].flatMap(idText) ?? m.userId
        guard let id else { throw VeroRejection(code: .missingUserID, detail: "a tags edit needs tags.id or userId") }
        return VeroRequest(method: .PUT, path: "/api/v2/users/tags/edit", body: ["id": .string(id), action: .array(values)])
    }

    static func idText(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s) where !s.isEmpty: s
        case .int(let i): String(i)
        default: nil
        }
    }

    /// The shape Segment's facade accepts as an email: something@something.tld, no spaces.
    public static func isEmail(_ text: String) -> Bool {
        text.range(of: #"^[^@\s]+@[^@\s]+\.[^@\s]+$"#, options: .regularExpression) != nil
    }
}
