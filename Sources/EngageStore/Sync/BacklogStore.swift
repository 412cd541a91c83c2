import EngageCore
import Foundation
import PostgresClient

/// The backlogs of full syncs and resyncs (`engage.backlogs`): what delivery turns into outbox
/// rows a batch at a time (``DiffEngine/expand(limit:lease:on:)``).
public struct BacklogStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Enqueues up to `limit` members from the destination's open backlogs, oldest first,
    /// leased to `lease.worker`. Backlogs of removed definitions are dropped; those of disabled
    /// ones wait. Returns how many members were covered (0: nothing to expand now) and the ids
    /// of the rows leased.
    @discardableResult
    public func expand(for destination: Destination, limit: Int, lease: DiffEngine.Lease? = nil)
        async throws -> (covered: Int, leased: [Int]) {
        // Each open backlog with its definition, in one query.
        let open = try await db.query("""
            SELECT c.id, c.definition, c.removed_at, c.created_at, c.updated_at, c.enabled
            FROM engage.backlogs b JOIN engage.computations c ON c.id = b.computation_id
            WHERE b.destination_id = \(destination.id) ORDER BY b.created_at
            """)
        var covered = 0
        var leased: [Int] = []
        for row in open where covered < limit {
            if try row.decode(Date?.self, "removed_at") != nil {
                try await db.query("""
                    DELETE FROM engage.backlogs WHERE destination_id = \(destination.id) AND computation_id = \(try row.decode(Int.self, "id"))
                    """)
                continue
            }
            guard try row.decode(Bool.self, "enabled") else { continue }
            let stored = try DefinitionRepository.decode(row)
            let engine = DiffEngine(computationID: stored.id, definition: stored.definition, destination: destination)
            let expanded = try await engine.expand(limit: limit - covered, lease: lease, on: db)
            covered += expanded.covered
            leased += expanded.leased
        }
        return (covered, leased)
    }
}
