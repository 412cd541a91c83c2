import EngageCore
import Foundation
import PostgresClient

/// Stores Vero's email events (docs/operations.md#email-events-from-vero) as `engage.events`, on the profile with the
/// webhook's user id, else its email, created when there is none.
public struct WebhookStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Stores the event in one transaction, committed when this returns. False when an event
    /// with its message id was stored before (Vero retried the call).
    @discardableResult
    public func record(_ event: VeroWebhookEvent) async throws -> Bool {
        try await db.withTransaction { tx in
            // Serialise profile creation for this user, so two calls cannot create it twice.
            try await tx.query("SELECT pg_advisory_xact_lock(hashtext('engage-sync:webhook:' || \(event.userID ?? event.email ?? "")))")
            var profileID = try await tx.query("""
                SELECT profile_id FROM engage.profiles
                WHERE (\(event.userID)::text IS NOT NULL AND user_id = \(event.userID)::text)
                   OR (\(event.userID)::text IS NULL AND email = \(event.email)::text)
                ORDER BY user_id IS NULL, profile_id LIMIT 1
                """).first?.decode(String.self, "profile_id")
            if profileID == nil {
                let id = event.userID ?? "email:" + (event.email ?? "")
                try await tx.query("""
                    INSERT INTO engage.profiles (profile_id, user_id, email) VALUES (\(id), \(event.userID), \(event.email))
                    ON CONFLICT DO NOTHING
                    """)
                profileID = id
            }
            let occurred = event.occurredAt.map { $0.date } ?? Date()
            return try await tx.query("""
                INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
                VALUES (\(event.messageID), \(profileID ?? ""), \(event.event), \(PostgresJSON(rawJSON: event.properties.jsonString))::jsonb,
                        \(occurred))
                ON CONFLICT (message_id) DO NOTHING
                """).affectedRows == 1
        }
    }
}
