import EngageCore
import PostgresClient

/// The gauges whose truth lives in the database
/// (docs/operations.md#running-as-a-service-engage-sync-serve), for `engage-sync metrics` (cron
/// and node_exporter's textfile collector) and, later, `serve`'s `/metrics`.
public struct GaugeStore: Sendable {
    public let db: PostgresConnection
    public init(_ db: PostgresConnection) { self.db = db }

    /// Per destination: rows waiting (outbox rows and the members a backlog has not reached,
    /// as `engage.sync_status` counts them), failed rows, the age of the oldest waiting one,
    /// and whether it is paused; per pair: when it last succeeded and how often it should run;
    /// per definition: the snapshot's size. Every figure is kept (``StatusStore``) or the first
    /// entry of an index: the gauges cost the same at any size.
    public func gauges() async throws -> [Gauge] {
        let destinations = try await db.query("""
            SELECT d.name,
                   \(StatusStore.waiting)::float8 AS pending,
                   coalesce((SELECT sum(f.failed) FROM engage.pair_figures f WHERE f.destination_id = d.id), 0)::float8 AS failed,
                   coalesce(extract(epoch FROM now() - least(
                       (SELECT o.created_at FROM engage.outbox o WHERE o.destination_id = d.id AND o.status = 'pending'
                        ORDER BY o.created_at LIMIT 1),
                       (SELECT min(b.created_at) FROM engage.backlogs b WHERE b.destination_id = d.id))), 0)::float8 AS oldest,
                   (d.paused_at IS NOT NULL)::int::float8 AS paused
            FROM engage.destinations d ORDER BY d.name
            """)
        let pairs = try await db.query("""
            SELECT s.key, s.destination, extract(epoch FROM c.sync_every)::float8 AS every,
                   (SELECT extract(epoch FROM max(r.finished_at))::float8 FROM engage.sync_runs r
                    WHERE r.computation_id = c.id AND r.destination_id = d.id AND r.status IN ('succeeded', 'partial')) AS last_success
            FROM engage.sync_status s JOIN engage.computations c ON c.key = s.key JOIN engage.destinations d ON d.name = s.destination
            ORDER BY s.key, s.destination
            """)
        let definitions = try await db.query("""
            SELECT c.key, coalesce(e.members, 0)::float8 AS members -- never evaluated: an empty snapshot
            FROM engage.computations c LEFT JOIN engage.evaluations e ON e.computation_id = c.id
            WHERE c.removed_at IS NULL ORDER BY c.key
            """)
        func samples(_ rows: PostgresRows, _ column: String, labels: [(name: String, column: String)]) throws -> [Gauge.Sample] {
            try rows.compactMap { row in
                guard let value = try row.decode(Double?.self, column) else { return nil }
                return Gauge.Sample(labels: try labels.map { ($0.name, try row.decode(String.self, $0.column)) }, value: value)
            }
        }
        let destination = [(name: "destination", column: "name")]
        let pair = [(name: "key", column: "key"), (name: "destination", column: "destination")]
        return [
            Gauge(name: "engage_sync_outbox_pending", help: "Changes waiting to be sent (outbox rows and backlog members).",
                  samples: try samples(destinations, "pending", labels: destination)),
            Gauge(name: "engage_sync_outbox_oldest_pending_age_seconds", help: "Age of the oldest change waiting to be sent (0: none).",
                  samples: try samples(destinations, "oldest", labels: destination)),
            Gauge(name: "engage_sync_outbox_failed", help: "Changes whose delivery failed for good (see engage.delivery_failures).",
                  samples: try samples(destinations, "failed", labels: destination)),
            Gauge(name: "engage_sync_destination_paused", help: "1 while delivery to the destination is paused (Vero rejected its token).",
                  samples: try samples(destinations, "paused", labels: destination)),
            Gauge(name: "engage_sync_last_success_timestamp_seconds", help: "When the pair's last successful run finished (Unix time).",
                  samples: try samples(pairs, "last_success", labels: pair)),
            Gauge(name: "engage_sync_sync_every_seconds", help: "How often the pair should run (the definition's sync_every).",
                  samples: try samples(pairs, "every", labels: pair)),
            Gauge(name: "engage_sync_members", help: "Profiles in the definition's current result (members, or profiles with a value).",
                  samples: try samples(definitions, "members", labels: [(name: "key", column: "key")])),
        ]
    }
}
