import EngageCore
import Foundation
import PostgresClient

/// A profile a search found.
public struct ProfileMatch: Sendable {
    public var profileID: String
    public var userID: String?
    public var email: String?
}

/// A value a profile holds now (the snapshot).
public struct ProfileHolding: Sendable {
    public var key: String
    public var type: Definition.Kind
    /// The value as JSON text (`true` for an audience).
    public var value: String
    public var since: Date?
}

/// What an entry of a profile's timeline records.
public enum TimelineKind: String, Sendable, PostgresDecodable {
    /// A definition's value took effect (an entry, or a trait's new value).
    case value
    /// A value ended (an exit, or a trait's value replaced).
    case ended
    /// A change written for a destination, and its fate.
    case sent
    /// A Vero email event that came back.
    case email
}

/// One entry of a profile's timeline.
public struct TimelineEntry: Sendable {
    public var at: Date
    public var kind: TimelineKind
    public var key: String?
    public var destination: String?
    /// The value (JSON text), the change and its status, or the email event and campaign.
    public var detail: String
}

/// A profile as its page shows it.
public struct ProfileDetail: Sendable {
    public var profileID: String
    public var userID: String?
    public var email: String?
    /// No row in `engage.profiles`: shown from what is kept about it.
    public var deleted: Bool
    public var holdings: [ProfileHolding]
    /// Newest first, at most 100.
    public var timeline: [TimelineEntry]
}

/// The profile pages' reads: a search by user id, email or profile id, and one profile with
/// what it holds and its timeline. The snapshot is read by its key, definition by definition;
/// the history and the outbox have no index by profile and are scanned for it (seconds at
/// tens of millions of rows: an index there would cost every sync's writes).
public struct ProfileReads: Sendable {
    let db: PostgresConnection

    public init(_ db: PostgresConnection) { self.db = db }

    /// The profiles whose user id, email or profile id is `q` (at most 20).
    public func find(_ q: String) async throws -> [ProfileMatch] {
        try await db.query("""
            SELECT profile_id, user_id, email FROM engage.profiles
            WHERE profile_id = \(q) OR user_id = \(q) OR email = \(q) ORDER BY profile_id LIMIT 20
            """).map { row in
            ProfileMatch(profileID: try row.decode(String.self, "profile_id"), userID: try row.decode(String?.self, "user_id"),
                         email: try row.decode(String?.self, "email"))
        }
    }

    /// The profile `id`, or nil when there is no such profile and nothing is kept about one.
    public func profile(_ id: String) async throws -> ProfileDetail? {
        let row = try await db.query("SELECT user_id, email FROM engage.profiles WHERE profile_id = \(id)").first
        let holdings = try await db.query("""
            SELECT c.key, c.type, m.value::text AS value, m.since
            FROM engage.computations c
            JOIN LATERAL (SELECT m.value, m.since FROM engage.memberships m
                          WHERE m.computation_id = c.id AND m.profile_id = \(id)) m ON true
            WHERE c.removed_at IS NULL ORDER BY c.type, c.key
            """).map { r in
            ProfileHolding(key: try r.decode(String.self, "key"), type: try r.decode(Definition.Kind.self, "type"),
                           value: try r.decode(String.self, "value"), since: try r.decode(Date?.self, "since"))
        }
        let timeline = try await db.query("""
            SELECT at, kind, key, destination, detail FROM (
                SELECT m.since AS at, 'value' AS kind, c.key, NULL::text AS destination, m.value::text AS detail
                FROM engage.computations c
                JOIN LATERAL (SELECT m.value, m.since FROM engage.memberships m
                              WHERE m.computation_id = c.id AND m.profile_id = \(id) AND m.since IS NOT NULL) m ON true
                UNION ALL
                SELECT h.since, 'value', c.key, NULL, h.value::text
                FROM engage.membership_history h JOIN engage.computations c ON c.id = h.computation_id
                WHERE h.profile_id = \(id) AND h.since IS NOT NULL
                UNION ALL
                SELECT h.until, 'ended', c.key, NULL, h.value::text
                FROM engage.membership_history h JOIN engage.computations c ON c.id = h.computation_id
                WHERE h.profile_id = \(id)
                UNION ALL
                (SELECT coalesce(o.delivered_at, o.created_at), 'sent', c.key, d.name,
                        o.op || ' ' || coalesce(o.value::text, 'null') || ' to ' || coalesce(o.vero_id, '(no Vero id)') || ': ' || o.status
                 FROM engage.outbox o LEFT JOIN engage.computations c ON c.id = o.computation_id
                 JOIN engage.destinations d ON d.id = o.destination_id
                 WHERE o.profile_id = \(id) ORDER BY o.id DESC LIMIT 50)
                UNION ALL
                (SELECT e.occurred_at, 'email', NULL, NULL, e.event || coalesce(' (' || (e.properties ->> 'campaign_name') || ')', '')
                 FROM engage.events e WHERE e.profile_id = \(id) AND e.event LIKE 'Email %' ORDER BY e.occurred_at DESC LIMIT 20)
            ) t ORDER BY at DESC, kind LIMIT 100
            """).map { r in
            TimelineEntry(at: try r.decode(Date.self, "at"), kind: try r.decode(TimelineKind.self, "kind"),
                          key: try r.decode(String?.self, "key"), destination: try r.decode(String?.self, "destination"),
                          detail: try r.decode(String.self, "detail"))
        }
        if row == nil && holdings.isEmpty && timeline.isEmpty { return nil }
        return ProfileDetail(profileID: id, userID: try row?.decode(String?.self, "user_id"), email: try row?.decode(String?.self, "email"),
                             deleted: row == nil, holdings: holdings, timeline: timeline)
    }
}
