import EngageCore
import Foundation
import PostgresClient

/// One Segment call ready for loading: the fields ingest stores, already taken out of the JSON.
public struct IngestRow: Sendable {
    public var line: Int
    public var kind: SegmentMessage.Kind
    /// `userId`, else `anonymousId` (for an alias: the `userId` it merges into).
    public var profileKey: String
    public var userID: String?
    public var anonymousID: String?
    public var previousID: String?
    public var messageID: String
    public var event: String?
    public var occurredAt: Date?
    /// page/screen: the name; group: the group id; identify: `traits.email` when a string.
    public var name: String?
    public var groupID: String?
    public var email: String?
    /// The JSON text of `properties` (track, page, screen) or `traits` (identify, group).
    public var payload: String?

    public init(line: Int, kind: SegmentMessage.Kind, profileKey: String, userID: String?, anonymousID: String?, previousID: String?,
                messageID: String, event: String?, occurredAt: Date?, name: String? = nil, groupID: String? = nil,
                email: String? = nil, payload: String? = nil) {
        self.line = line
        self.kind = kind
        self.profileKey = profileKey
        self.userID = userID
        self.anonymousID = anonymousID
        self.previousID = previousID
        self.messageID = messageID
        self.event = event
        self.occurredAt = occurredAt
        self.name = name
        self.groupID = groupID
        self.email = email
        self.payload = payload
    }

    /// The values in staging-table column order, as COPY text.
    var columns: [String?] {
        [String(line), kind.rawValue, profileKey, userID, anonymousID, previousID, messageID, event,
         occurredAt.map { String(Int64(($0.timeIntervalSince1970 * 1_000_000).rounded())) }, name, groupID, email, payload]
    }
}

/// What loading a batch did.
public struct IngestCounts: Sendable {
    public var profilesCreated = 0
    public var profilesUpdated = 0
    public var eventsInserted = 0
    public var duplicateEvents = 0
    public var aliases = 0
    public init() {}

    public static func += (lhs: inout IngestCounts, rhs: IngestCounts) {
        lhs.profilesCreated += rhs.profilesCreated
        lhs.profilesUpdated += rhs.profilesUpdated
        lhs.eventsInserted += rhs.eventsInserted
        lhs.duplicateEvents += rhs.duplicateEvents
        lhs.aliases += rhs.aliases
    }
}

/// Loads Segment calls into `engage.profiles` / `engage.events`: COPY into a staging table,
/// then set-based upserts in one transaction per batch. Idempotent by `messageId`.
public struct IngestStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Creates the session's staging table. Times are microseconds since the epoch: cheaper
    /// to write and to read than timestamp text.
    public func prepare() async throws {
        try await db.execute("""
            CREATE TEMP TABLE IF NOT EXISTS engage_ingest_stage (
                line bigint, kind text, profile_key text, user_id text, anonymous_id text, previous_id text,
                message_id text, event text, occurred_us bigint, name text, group_id text, email text, payload jsonb)
            """)
    }

    /// Copies rows into the staging table. Throws the server's error when a payload is one
    /// PostgreSQL refuses (the caller then finds the bad line with ``stageOne(_:)``).
    public func stage(_ rows: [IngestRow]) async throws {
        try await db.execute("TRUNCATE engage_ingest_stage")
        try await db.copyIn("COPY engage_ingest_stage FROM STDIN") { writer in
            for r in rows { try await writer.writeRow(r.columns) }
        }
    }

    /// Stages one row with a parameterized insert; throws when PostgreSQL refuses it.
    public func stageOne(_ r: IngestRow) async throws {
        let values = PostgresQuery.joined(r.columns.map { "\($0)" }, separator: ", ")
        try await db.query("INSERT INTO engage_ingest_stage VALUES (\(values))")
    }

    public func clearStage() async throws { try await db.execute("TRUNCATE engage_ingest_stage") }

    /// Applies the staged rows in one transaction.
    public func apply() async throws -> IngestCounts {
        try await db.withTransaction { tx in
            var counts = IngestCounts()
            counts.profilesCreated = try await tx.query("""
                INSERT INTO engage.profiles (profile_id, user_id, anonymous_id)
                SELECT DISTINCT ON (profile_key) profile_key, user_id, anonymous_id
                FROM engage_ingest_stage WHERE kind <> 'alias'
                ORDER BY profile_key, line
                ON CONFLICT (profile_id) DO NOTHING
                """).affectedRows
            counts.profilesUpdated = try await tx.query("""
                UPDATE engage.profiles p
                SET traits = p.traits || t.traits, email = coalesce(t.email, p.email),
                    user_id = coalesce(p.user_id, t.user_id), anonymous_id = coalesce(p.anonymous_id, t.anonymous_id),
                    updated_at = now()
                FROM (SELECT profile_key,
                             engage.jsonb_merge(CASE
                                 WHEN kind = 'identify' THEN coalesce(payload, '{}')
                                 ELSE jsonb_build_object('group_id', group_id, 'group', coalesce(payload, '{}'))
                             END ORDER BY line) AS traits,
                             (array_agg(email ORDER BY line DESC) FILTER (WHERE email IS NOT NULL))[1] AS email,
                             max(user_id) AS user_id, max(anonymous_id) AS anonymous_id
                      FROM engage_ingest_stage WHERE kind IN ('identify', 'group')
                      GROUP BY profile_key) t
                WHERE p.profile_id = t.profile_key
                """).affectedRows
            let events = try await tx.query("""
                INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
                SELECT message_id, profile_key,
                       CASE kind WHEN 'page' THEN 'Page Viewed' WHEN 'screen' THEN 'Screen Viewed' ELSE event END,
                       CASE WHEN kind = 'track' OR name IS NULL THEN coalesce(payload, '{}')
                            ELSE coalesce(payload, '{}') || jsonb_build_object(kind || '_name', name) END,
                       CASE WHEN occurred_us IS NULL THEN now()
                            ELSE timestamptz 'epoch' + occurred_us * interval '1 microsecond' END
                FROM engage_ingest_stage WHERE kind IN ('track', 'page', 'screen')
                ORDER BY message_id -- every lane takes message ids in one order: no deadlock on a shared id
                ON CONFLICT (message_id) DO NOTHING
                """).affectedRows
            let staged = try await tx.query("""
                SELECT count(*)::int AS c FROM engage_ingest_stage WHERE kind IN ('track', 'page', 'screen')
                """).first?.decode(Int.self, "c") ?? 0
            counts.eventsInserted = events
            counts.duplicateEvents = staged - events
            // Aliases, in line order: the anonymous profile merges into the identified one.
            let aliases = try await tx.query("""
                SELECT previous_id, profile_key FROM engage_ingest_stage WHERE kind = 'alias' ORDER BY line
                """)
            for alias in aliases {
                let from = try alias.decode(String.self, "previous_id"), to = try alias.decode(String.self, "profile_key")
                guard from != to else { continue }
                counts.aliases += try await Self.merge(from: from, into: to, tx.connection)
            }
            return counts
        }
    }

    /// Moves `from`'s events to `into` (created if missing), merges traits (the identified
    /// profile's win), and deletes `from`. Returns 1 when there was something to merge.
    static func merge(from: String, into: String, _ tx: PostgresConnection) async throws -> Int {
        let exists = try await tx.query("SELECT 1 FROM engage.profiles WHERE profile_id = \(from)").count
        guard exists > 0 else { return 0 }
        try await tx.query("""
            INSERT INTO engage.profiles (profile_id, user_id, anonymous_id) VALUES (\(into), \(into), \(from))
            ON CONFLICT (profile_id) DO NOTHING
            """)
        try await tx.query("UPDATE engage.events SET profile_id = \(into) WHERE profile_id = \(from)")
        try await tx.query("""
            UPDATE engage.profiles t SET traits = f.traits || t.traits, email = coalesce(t.email, f.email),
                anonymous_id = coalesce(t.anonymous_id, f.anonymous_id, f.profile_id), updated_at = now()
            FROM engage.profiles f WHERE f.profile_id = \(from) AND t.profile_id = \(into)
            """)
        try await tx.query("DELETE FROM engage.profiles WHERE profile_id = \(from)")
        return 1
    }
}
