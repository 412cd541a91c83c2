import PostgresClient

/// What the due definitions of one run share: the profiles the change log lists for any of
/// them, their rows and their events, read once from `engage.profiles` and `engage.events` into
/// the session (``ScratchTable/sharedProfiles``, ``ScratchTable/sharedEvents``) instead of once
/// per definition. A cron cycle of fifty definitions after a churn evaluates the same changed
/// profiles fifty times; their events are scattered over the events table, and each evaluation
/// read them again, page by page (docs/performance.md#where-the-time-goes).
///
/// The copy is taken in one snapshot, ``seen``: every pair of the run records that snapshot as
/// what it saw (older than its own), so whatever committed after the copy is read again by the
/// next run. An evaluation uses the copy only when its definition's last evaluation saw nothing
/// the copy did not (``covers(_:_:)``: another process may have evaluated it since).
public struct SharedChanges: Sendable {
    /// The snapshot the copy was taken in.
    public let seen: String
    /// How many profiles it holds.
    public let profiles: Int

    /// At most this share of the profiles is copied: above it the evaluations are full, or
    /// nearly so, and a copy would only add a pass.
    static let maxShare = 0.1
    /// Below this many listed profiles the copy is small whatever the share (a small database's
    /// statistics are too rough to judge by).
    static let alwaysBelow = 10_000
    /// The session's `temp_buffers` while a copy is held, in 8 kB buffers (256 MB): at 10% of a
    /// million profiles with ten events each, the copy takes about 250 MB.
    static let tempBuffers = 32_768

    /// Copies the rows and events of the profiles the change log lists for any of
    /// `computationIDs` since its last evaluation, when there are two or more of them and the
    /// profiles are few enough (``maxShare``, ``alwaysBelow``); else nil. Runs in a transaction
    /// of its own, at REPEATABLE READ, so the copy and ``seen`` are one snapshot.
    public static func prepare(computationIDs: Set<Int>, _ db: PostgresConnection) async throws -> SharedChanges? {
        guard computationIDs.count >= 2 else { return nil }
        let ids = computationIDs.sorted()
        // The copy is read by every evaluation of the run: in local buffers of the default size
        // (8 MB) each read it back from the operating system. Settable only before the session
        // first uses a temporary table; a session that has keeps its size.
        _ = try? await db.query("""
            SELECT set_config('temp_buffers', greatest(setting::int, \(tempBuffers))::text, false) FROM pg_settings WHERE name = 'temp_buffers'
            """)
        return try await db.withTransaction { tx in
            let db = tx.connection
            try await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            let changeLog = ChangeLog(db)
            let seen = try await changeLog.currentSnapshot()
            let count = try await changeLog.listedCount(afterLastEvaluationOf: ids)
            let profiles = try await changeLog.estimatedProfiles()
            guard count > 0, Double(count) <= max(maxShare * Double(profiles), Double(alwaysBelow)) else {
                tx.rollback()
                return nil
            }
            let shared = ScratchTable.sharedProfiles
            try await shared.create(as: """
                SELECT l.profile_id, p.user_id, p.email, p.traits, p.profile_id IS NOT NULL
                FROM (\(ChangeLog.listedProfiles(afterLastEvaluationOf: ids))) l
                LEFT JOIN engage.profiles p ON p.profile_id = l.profile_id
                """, db)
            try await shared.indexAndAnalyze(db)
            try await ScratchTable.sharedEvents.create(as: """
                SELECT e.message_id, e.profile_id, e.event, e.properties, e.occurred_at
                FROM engage.events e WHERE e.profile_id IN (SELECT profile_id FROM \(shared))
                """, db)
            // Each evaluation reads the copy whole (hash-joined with its affected profiles): an
            // index on it made no measurable difference.
            try await ScratchTable.sharedEvents.analyze(db)
            let copied = try await db.query("SELECT count(*)::int AS n FROM \(shared)").first?.decode(Int.self, "n") ?? 0
            return SharedChanges(seen: seen, profiles: copied)
        }
    }

    /// Drops the copy (the run is done with it).
    public static func drop(_ db: PostgresConnection) async throws {
        try await ScratchTable.sharedEvents.drop(db)
        try await ScratchTable.sharedProfiles.drop(db)
    }

    /// Whether the copy holds everything the evaluation that saw `lastSeen` saw: that
    /// snapshot counts no transaction as committed that the copy's does not (it is not newer,
    /// and nothing running when the copy was taken had committed for it).
    func covers(_ lastSeen: String, _ db: PostgresConnection) async throws -> Bool {
        try await db.query("""
            SELECT pg_snapshot_xmax(\(lastSeen)::pg_snapshot) <= pg_snapshot_xmax(\(seen)::pg_snapshot)
               AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(\(seen)::pg_snapshot) x
                               WHERE pg_visible_in_snapshot(x, \(lastSeen)::pg_snapshot)) AS covers
            """).first?.decode(Bool.self, "covers") ?? false
    }

    /// The rows and events of the profiles in `affected`, as relations with the columns a
    /// compiled query reads of `engage.profiles` and `engage.events`: the copy's, and the
    /// tables' for the affected profiles it does not hold (``ScratchTable/unshared``, which
    /// this creates).
    func sources(for affected: ScratchTable, _ db: PostgresConnection) async throws -> DefinitionCompiler.Sources {
        let unshared = ScratchTable.unshared
        try await unshared.create(as: """
            SELECT profile_id FROM \(affected) EXCEPT SELECT profile_id FROM \(ScratchTable.sharedProfiles)
            """, db)
        try await unshared.analyze(db)
        return DefinitionCompiler.Sources(
            profiles: """
                (SELECT profile_id, user_id, email, traits FROM \(ScratchTable.sharedProfiles) WHERE present
                 UNION ALL
                 SELECT profile_id, user_id, email, traits FROM engage.profiles
                 WHERE profile_id IN (SELECT profile_id FROM \(unshared)))
                """,
            events: """
                (SELECT message_id, profile_id, event, properties, occurred_at FROM \(ScratchTable.sharedEvents)
                 UNION ALL
                 SELECT message_id, profile_id, event, properties, occurred_at FROM engage.events
                 WHERE profile_id IN (SELECT profile_id FROM \(unshared)))
                """)
    }
}
