import Foundation
import PostgresClient
import Testing
import TestSupport

/// `engage-sync metrics` (docs/operations.md#running-as-a-service-engage-sync-serve, for cron
/// users): the gauges held in the database, in
/// Prometheus text, equal to what the tables say.
@Suite("metrics: the database's gauges in Prometheus text")
struct MetricsTests {
    /// Parses Prometheus text: every sample line must follow its metric's `# TYPE` (one of
    /// `types`; a histogram's `_bucket`, `_sum` and `_count` samples count as its own) and, when
    /// `help` is set, its `# HELP`; returns `name{label="value",…}` → value.
    static func parse(_ text: String, types: Set<String> = ["gauge"], help: Bool = true) throws -> [String: Double] {
        struct Malformed: Error, CustomStringConvertible { var description: String }
        let sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (\S+)$/
        var typed: Set<String> = [], helped: Set<String> = [], values: [String: Double] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            if line.hasPrefix("# HELP ") {
                helped.insert(String(line.dropFirst(7).prefix { $0 != " " }))
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, types.contains(String(parts[3])) else { throw Malformed(description: "bad TYPE line: \(line)") }
                typed.insert(String(parts[2]))
            } else if let match = try sample.wholeMatch(in: String(line)) {
                let name = String(match.1)
                let family = typed.contains(name) ? name
                    : ["_bucket", "_sum", "_count"].first { name.hasSuffix($0) }.map { String(name.dropLast($0.count)) } ?? name
                guard typed.contains(family), !help || helped.contains(family) else {
                    throw Malformed(description: "no HELP/TYPE before \(line)")
                }
                guard let value = Double(match.4) else { throw Malformed(description: "bad value: \(line)") }
                values["\(name){\(match.3 ?? "")}"] = value
            } else {
                throw Malformed(description: "not a sample: \(line)")
            }
        }
        return values
    }

    @Test("pending, members, last success and age follow a sync and its delivery")
    func followsTheTables() async throws {
        try await SyncFixture.with { f in
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', jsonb_build_object('plan', CASE WHEN i <= 30 THEN 'pro' ELSE 'free' END)
                FROM generate_series(1, 50) i
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}, "sync_every": "15m"}"#)
            let before = try Self.parse(try await f.cli(["metrics"]).stdout)
            #expect(before[#"engage_sync_outbox_pending{destination="vero"}"#] == 0)
            #expect(before[#"engage_sync_last_success_timestamp_seconds{key="pro",destination="vero"}"#] == nil)

            #expect(try await f.cli(["run", "--no-deliver"]).status == 0)
            let waiting = try Self.parse(try await f.cli(["metrics"]).stdout)
            // The first sync's members wait in its backlog: 30 pending, as sync_status says.
            #expect(waiting[#"engage_sync_outbox_pending{destination="vero"}"#] == 30)
            #expect(try await f.count("SELECT pending::int AS c FROM engage.sync_status WHERE key = 'pro'") == 30)
            #expect(waiting[#"engage_sync_members{key="pro"}"#] == 30)
            #expect(waiting[#"engage_sync_sync_every_seconds{key="pro",destination="vero"}"#] == 900)
            #expect((waiting[#"engage_sync_outbox_oldest_pending_age_seconds{destination="vero"}"#] ?? -1) >= 0)
            let finished = try await f.db.query("""
                SELECT extract(epoch FROM max(finished_at))::float8 AS at FROM engage.sync_runs WHERE status IN ('succeeded', 'partial')
                """).first?.decode(Double.self, "at")
            #expect(waiting[#"engage_sync_last_success_timestamp_seconds{key="pro",destination="vero"}"#] == finished)

            #expect(try await f.cli(["deliver", "--max-wait", "0"]).status == 0)
            let delivered = try Self.parse(try await f.cli(["metrics"]).stdout)
            #expect(delivered[#"engage_sync_outbox_pending{destination="vero"}"#] == 0)
            #expect(delivered[#"engage_sync_outbox_oldest_pending_age_seconds{destination="vero"}"#] == 0)
            #expect(delivered[#"engage_sync_outbox_failed{destination="vero"}"#] == 0)
            #expect(try await f.sandboxRequests().total == 30)
        }
    }
}
