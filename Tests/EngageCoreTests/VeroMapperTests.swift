import EngageCore
import Foundation
import Testing

@Suite("The Vero mapper (docs/architecture.md#the-vero-mapping)")
struct VeroMapperTests {
    func message(_ json: String) throws -> SegmentMessage { try SegmentMessage(line: json) }

    func requests(_ json: String) throws -> [VeroRequest] { try VeroMapper.map(try message(json)).get() }

    func rejection(_ json: String) throws -> VeroRejection? {
        if case .failure(let r) = VeroMapper.map(try message(json)) { return r }
        return nil
    }

    @Test("identify: id, email from traits, data = traits plus id (Segment fixture identify-basic)")
    func identifyBasic() throws {
        let r = try requests("""
            {"type": "identify", "userId": "user-id", "messageId": "m1", "timestamp": "2014-01-01T00:00:00Z",
             "traits": {"avatar": "a.png", "country": "US", "name": "John Doe", "email": "jd@example.com", "age": 23},
             "context": {"ip": "1.2.3.4"}, "unknownField": 1}
            """)
        #expect(r == [VeroRequest(method: .POST, path: "/api/v2/users/track", body: [
            "id": "user-id", "email": "jd@example.com",
            "data": ["avatar": "a.png", "country": "US", "name": "John Doe", "email": "jd@example.com", "age": 23, "id": "user-id"],
        ])])
    }

    @Test("identify whose userId is an email and that has no traits.email")
    func identifyEmailUserID() throws {
        let r = try requests(#"{"type": "identify", "userId": "ann@example.com", "traits": {"plan": "pro"}}"#)
        #expect(r.first?.body["email"] == "ann@example.com")
        #expect(r.first?.body["id"] == "ann@example.com")
        let noEmail = try requests(#"{"type": "identify", "userId": "u1", "traits": {}}"#)
        #expect(noEmail.first?.body["email"] == nil)
    }

    @Test("traits keep their JSON types: booleans, nested objects, arrays, nulls")
    func typesKept() throws {
        let r = try requests(#"{"type": "identify", "userId": "u1", "traits": {"order_completed_last_30days": true, "gone": false, "address": {"city": "Paris"}, "tags": ["a", 1], "nothing": null, "ratio": 0.5}}"#)
        let data = r.first?.body["data"]
        #expect(data?["order_completed_last_30days"] == .bool(true))
        #expect(data?["gone"] == .bool(false))
        #expect(data?["address"] == .object(["city": "Paris"]))
        #expect(data?["tags"] == .array(["a", .int(1)]))
        #expect(data?["nothing"] == .null)
        #expect(data?["ratio"] == .double(0.5))
    }

    @Test("track: events/track with context.traits.email, properties as data, extras.created_at in unix seconds")
    func track() throws {
        let r = try requests("""
            {"type": "track", "userId": "user-id", "event": "my-event", "timestamp": "2014-01-01T00:00:00.000Z",
             "properties": {"revenue": 10, "email": "not-promoted@example.com"}, "context": {"traits": {"email": "user-email@example.com"}}}
            """)
        #expect(r == [VeroRequest(method: .POST, path: "/api/v2/events/track", body: [
            "identity": ["id": "user-id", "email": "user-email@example.com"], "event_name": "my-event",
            "data": ["revenue": 10, "email": "not-promoted@example.com"],
            "extras": ["created_at": 1_388_534_400, "source": "segment"],
        ])])
        // Segment's fixture uses a bare year as the timestamp.
        let year = try requests(#"{"type": "track", "userId": "u", "event": "e", "timestamp": "2014"}"#)
        #expect(year.first?.body["extras"]?["created_at"] == .int(1_388_534_400))
        #expect(year.first?.body["identity"] == .object(["id": "u"]))
    }

    @Test("unsubscribe and resubscribe: whole name, any case; id from properties.id or userId")
    func unsubscribe() throws {
        let u = try requests(#"{"type": "track", "userId": "u1", "event": "Unsubscribe", "properties": {"id": "p-id"}}"#)
        #expect(u == [VeroRequest(method: .POST, path: "/api/v2/users/unsubscribe", body: ["id": "p-id"])])
        let r = try requests(#"{"type": "track", "userId": "u1", "event": "RESUBSCRIBE"}"#)
        #expect(r == [VeroRequest(method: .POST, path: "/api/v2/users/resubscribe", body: ["id": "u1"])])
        // Deviation from Segment: "Email Unsubscribed" is an ordinary event.
        let e = try requests(#"{"type": "track", "userId": "u1", "event": "Email Unsubscribed"}"#)
        #expect(e.first?.path == "/api/v2/events/track")
        #expect(e.first?.body["event_name"] == "Email Unsubscribed")
    }

    @Test("page: viewed_page with the url")
    func page() throws {
        let r = try requests(#"{"type": "page", "userId": "user-id", "name": "Home", "properties": {"url": "http://my-favorite-site.com"}, "timestamp": "2014-01-01T00:00:00Z"}"#)
        #expect(r == [VeroRequest(method: .POST, path: "/api/v2/events/track", body: [
            "identity": ["id": "user-id"], "event_name": "viewed_page", "data": ["url": "http://my-favorite-site.com"],
            "extras": ["created_at": 1_388_534_400, "source": "segment"],
        ])])
    }

    @Test("group: users/edit with changes.group, email removed; without userId: rejected")
    func group() throws {
        let r = try requests(#"{"type": "group", "userId": "user-id", "groupId": "g", "traits": {"name": "ballers", "duty": "shot calling", "email": "jd@example.com"}}"#)
        #expect(r == [VeroRequest(method: .PUT, path: "/api/v2/users/edit", body: [
            "id": "user-id", "changes": ["group": ["name": "ballers", "duty": "shot calling"]],
        ])])
        #expect(try rejection(#"{"type": "group", "groupId": "g", "traits": {"email": "jd@example.com", "name": "x"}}"#)?.code == .missingUserID)
    }

    @Test("alias: reidentify previousId → userId; without previousId: rejected")
    func alias() throws {
        let r = try requests(#"{"type": "alias", "previousId": "user-id", "userId": "new-user-id"}"#)
        #expect(r == [VeroRequest(method: .PUT, path: "/api/v2/users/reidentify", body: ["id": "user-id", "new_id": "new-user-id"])])
        #expect(try rejection(#"{"type": "alias", "userId": "new"}"#)?.code == .missingPreviousID)
    }

    @Test("calls without userId are rejected; screen has no mapping")
    func missingUserID() throws {
        #expect(try rejection(#"{"type": "identify", "anonymousId": "a1", "traits": {"email": "x@example.com"}}"#)?.code == .missingUserID)
        #expect(try rejection(#"{"type": "track", "anonymousId": "a1", "event": "E"}"#)?.code == .missingUserID)
        #expect(try rejection(#"{"type": "page", "anonymousId": "a1"}"#)?.code == .missingUserID)
        #expect(try rejection(#"{"type": "screen", "userId": "u1", "name": "Home"}"#)?.code == .unsupportedType)
    }

    @Test("tags: a second request after the main one; explicit id; remove; integrations.vero also read")
    func tags() throws {
        let r = try requests(#"{"type": "track", "userId": "user-id", "event": "e", "integrations": {"Vero": {"tags": {"id": "billbrasky", "action": "remove", "values": ["yolo"]}}}}"#)
        #expect(r.count == 2)
        #expect(r[0].path == "/api/v2/events/track")
        #expect(r[1] == VeroRequest(method: .PUT, path: "/api/v2/users/tags/edit", body: ["id": "billbrasky", "remove": ["yolo"]]))
        let lower = try requests(#"{"type": "identify", "userId": "u1", "integrations": {"vero": {"tags": {"action": "add", "values": ["a", "b"]}}}}"#)
        #expect(lower[1] == VeroRequest(method: .PUT, path: "/api/v2/users/tags/edit", body: ["id": "u1", "add": ["a", "b"]]))
    }

    @Test("malformed tags are rejected with what is wrong", arguments: [
        (#"true"#, "must be an object"),
        (#"{"action": "somthing_dumb", "values": ["x"]}"#, "action must be"),
        (#"{"action": "add", "values": {}}"#, "values must be an array"),
        (#"{"action": "add", "values": [1]}"#, "strings only"),
    ])
    func badTags(tags: String, expected: String) throws {
        let r = try rejection(#"{"type": "identify", "userId": "u1", "integrations": {"Vero": {"tags": \#(tags)}}}"#)
        #expect(r?.code == .invalidTags)
        #expect(r?.detail?.contains(expected) == true, "\(r?.description ?? "no rejection")")
    }

    @Test("decoding: real payload shapes accepted, malformed ones rejected with a reason")
    func decoding() throws {
        let segmentExample = """
            {"anonymousId": "507f191e810c19729de860ea", "channel": "browser",
             "context": {"ip": "8.8.8.8", "userAgent": "Mozilla/5.0", "traits": {"email": "peter@example.com"}},
             "integrations": {"All": false, "Vero": true}, "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
             "receivedAt": "2015-02-23T22:28:55.387Z", "sentAt": "2015-02-23T22:28:55.111Z",
             "timestamp": "2015-02-23T22:28:55.111Z", "traits": {"name": "Peter Gibbons", "email": "peter@example.com",
             "plan": "premium", "logins": 5}, "type": "identify", "userId": 97980, "version": "1.1"}
            """
        let m = try message(segmentExample)
        #expect(m.type == .identify)
        #expect(m.userId == "97980")
        #expect(m.traits["logins"] == .int(5))
        #expect(m.contextEmail == "peter@example.com")
        #expect(m.veroOptions == .bool(true))
        for (bad, reason) in [("[1]", "JSON object"), (#"{"userId": "u"}"#, "missing \"type\""),
                              (#"{"type": "launch"}"#, "unknown type"), (#"{"type": "track", "userId": "u"}"#, "event"),
                              (#"{"type": "identify", "traits": []}"#, "traits"), ("{nope", "invalid JSON"),
                              (#"{"type": "track", "event": "e", "timestamp": "yesterday"}"#, "timestamp")] {
            #expect(throws: SegmentMessage.DecodingError.self) { try message(bad) }
            do { _ = try message(bad) } catch { #expect("\(error)".contains(reason), "\(bad) → \(error)") }
        }
    }

    @Test("retry policy: full jitter under an exponential ceiling, Retry-After as a floor")
    func retryPolicy() {
        let policy = RetryPolicy(baseSeconds: 1, capSeconds: 60)
        #expect(policy.ceiling(afterAttempt: 1) == 1)
        #expect(policy.ceiling(afterAttempt: 4) == 8)
        #expect(policy.ceiling(afterAttempt: 20) == 60)
        #expect(policy.delay(afterAttempt: 3, random: { $0 }) == 4)
        #expect(policy.delay(afterAttempt: 3, random: { _ in 0 }) == 0)
        #expect(policy.delay(afterAttempt: 1, retryAfter: 7, random: { $0 }) == 7)
        for _ in 0..<100 {
            let d = policy.delay(afterAttempt: 5)
            #expect(d >= 0 && d <= 16)
        }
    }
}

@Suite("The audience call of docs/architecture.md#how-syncs-behave, as EngageCore builds it")
struct AudienceCallTests {
    @Test("an identify carries the trait, the email and context.personas; a track the event and properties; the mapper sends them")
    func exactJSON() throws {
        let instant = try #require(Timestamp.parse("2026-06-01T12:00:00.123456Z")).date
        var call = AudienceCall(kind: .identify, messageID: "engage-abc", timestamp: instant, userID: "u1", email: "ann@example.com",
                                key: "vip", value: true, computationClass: .audience, computationID: 7, spaceID: "spa_1")
        let personas: JSONValue = ["computation_class": "audience", "computation_id": "7", "computation_key": "vip",
                                   "namespace": "spa_1", "space_id": "spa_1"]
        #expect(call.json == [
            "type": "identify", "messageId": "engage-abc", "timestamp": "2026-06-01T12:00:00.123Z", "userId": "u1",
            "traits": ["vip": true, "email": "ann@example.com"], "context": ["personas": personas],
            "integrations": ["All": false, "Vero": true],
        ])
        let identify = try VeroMapper.map(call.message).get()
        #expect(identify.first?.path == "/api/v2/users/track")
        #expect(identify.first?.body["data"] == ["vip": true, "email": "ann@example.com", "id": "u1"])

        call.kind = .track
        call.value = false
        call.email = nil
        #expect(call.json == [
            "type": "track", "messageId": "engage-abc", "timestamp": "2026-06-01T12:00:00.123Z", "userId": "u1",
            "event": "Audience Exited", "properties": ["audience_key": "vip", "vip": false],
            "context": ["personas": personas], "integrations": ["All": false, "Vero": true],
        ])
        #expect(try VeroMapper.map(call.message).get().first?.path == "/api/v2/events/track")
    }
}
