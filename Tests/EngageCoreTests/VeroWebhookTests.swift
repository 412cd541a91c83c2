import EngageCore
import Foundation
import Testing

@Suite("Vero webhooks mapped to email events")
struct VeroWebhookTests {
    func parse(_ text: String) -> Result<VeroWebhookEvent, VeroWebhookEvent.Invalid> {
        VeroWebhookEvent.parse(Array(text.utf8))
    }

    @Test("names, email-spec properties, time, and a message id stable across retries and distinct across calls")
    func mapping() throws {
        let body = #"{"type": "clicked", "user": {"id": 42, "email": "a@example.com"}, "message_id": "m1", "clicked_at": 1764460800, "url": "https://x.example/", "campaign": {"id": "c9", "name": "Winter", "subject": "Hi"}}"#
        let event = try parse(body).get()
        #expect(event.event == "Email Link Clicked")
        #expect(event.userID == "42" && event.email == "a@example.com")
        #expect(event.properties["link_url"] == "https://x.example/" && event.properties["email_subject"] == "Hi")
        #expect(event.properties["campaign_id"] == "c9" && event.properties["campaign_name"] == "Winter" && event.properties["email_id"] == "m1")
        #expect(event.properties["vero"]?["clicked_at"] == 1764460800)
        #expect(event.occurredAt == Timestamp.parse("2025-11-30T00:00:00Z"))
        #expect(try parse(body).get().messageID == event.messageID)
        let other = try parse(body.replacingOccurrences(of: "clicked_at\": 1764460800", with: "clicked_at\": 1764460801")).get()
        #expect(other.messageID != event.messageID)
        #expect(try parse(#"{"type": "resubscribed", "user": {"email": "b@example.com"}}"#).get().event == "Email Resubscribed")
        #expect(try parse(#"{"type": "complained", "user": {"id": "u"}, "sent_at": 1}"#).get().event == "Email Marked as Spam")
    }

    @Test("what cannot be used is refused with the reason")
    func invalid() {
        #expect(throws: VeroWebhookEvent.Invalid.self) { try parse("{").get() }
        #expect(throws: VeroWebhookEvent.Invalid(reason: "the body must be a JSON object")) { try parse("[]").get() }
        #expect(throws: VeroWebhookEvent.Invalid(reason: #""user" must have an "id" or an "email""#)) {
            try parse(#"{"type": "opened", "user": {"id": ""}}"#).get()
        }
        #expect(throws: VeroWebhookEvent.Invalid(reason: #""type" must name the event, e.g. "opened""#)) {
            try parse(#"{"type": "x; DROP", "user": {"id": "u"}}"#).get()
        }
    }
}
