import EngageCore
import EngageSync
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// Workers whose batches outlive their lease (a slow destination): each keeps the lease of
/// what it holds alive, so no row is sent twice, and the workers' reports add up.
@Suite("leases outlived by slow batches: every row sent once")
struct LeaseTests {
    /// 200 pending rows to a destination answering in 300 ms with 4 lanes: about 15 s of
    /// sending, several times the 4 s lease each worker asks for.
    static let rows = 200
    static let lanes = 4
    static let sandbox = SandboxConfiguration(latencyMilliseconds: 300)
    static let leaseFlags = ["--lease", "4"]
    /// serve logs each delivery pass's report at `info`.
    static let info = ["ENGAGE_SYNC_LOG_LEVEL": "info"]

    /// What `deliver` printed: `vero: delivered N, retried N, failed N, rejected N, repeated N; …`.
    static func reported(_ text: String) -> (delivered: Int, repeated: Int)? {
        guard let match = text.firstMatch(of: #/delivered (\d+), retried \d+, failed \d+, rejected \d+, repeated (\d+)/#) else { return nil }
        return (Int(match.1) ?? 0, Int(match.2) ?? 0)
    }

    /// Every `serve` log line of a delivery pass, summed.
    static func servedTotals(_ log: String) -> (delivered: Int, repeated: Int) {
        log.split(separator: "\n").filter { $0.contains("delivery to vero: delivered") }.reduce(into: (0, 0)) { sum, line in
            if let r = reported(String(line)) { sum.0 += r.delivered; sum.1 += r.repeated }
        }
    }

    /// Each row reached the sandbox once, every row is delivered, and no lease is left.
    func expectSentOnce(_ f: SyncFixture) async throws {
        let requests = try await f.sandboxRequests().requests
        let twice = Dictionary(grouping: requests, by: { $0.userID ?? "?" }).filter { $0.value.count > 1 }
        let attempts = try await f.db.query("SELECT id, attempts, last_error FROM engage.outbox WHERE attempts <> 1")
            .map { $0.values.map { $0 ?? "NULL" }.joined(separator: " ") }
        #expect(requests.count == Self.rows, "\(requests.count) requests for \(Self.rows) rows: \(twice.mapValues { $0.map(\.status) }) \(attempts.prefix(10))")
        #expect(Set(requests.compactMap(\.userID)).count == Self.rows)
        let undelivered = try await f.db.query("""
            SELECT id, status, attempts, locked_by, locked_until, last_error FROM engage.outbox WHERE status <> 'delivered'
            """).map { $0.values.map { $0 ?? "NULL" }.joined(separator: " ") }
        #expect(undelivered.isEmpty, "\(undelivered.prefix(5))")
        #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE locked_by IS NOT NULL") == 0)
        #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger") == Self.rows)
        // Workers recording at once kept the figures exact.
        let figures = try await f.figureDrift()
        #expect(figures.isEmpty, "\(figures)")
    }

    @Test("two deliver processes, a 4 s lease and a 15 s backlog: each row sent once; the reports add up")
    func twoWorkers() async throws {
        try await SyncFixture.with(sandbox: Self.sandbox, concurrency: Self.lanes) { f in
            try await f.seedOutbox(count: Self.rows)
            let args = ["deliver", "--max-wait", "5"] + Self.leaseFlags
            let first = Task { try await f.cli(args) }
            // The second starts once the first has sent a share (and its first leases have run out).
            try await f.waitFor("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'", atLeast: 20, seconds: 120)
            let second = try await f.cli(args)
            let one = try await first.value
            for run in [one, second] { #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)") }
            let a = try #require(Self.reported(one.stdout)), b = try #require(Self.reported(second.stdout))
            #expect(a.delivered + b.delivered == Self.rows, "\(one.stdout)\(second.stdout)")
            #expect(a.repeated == 0 && b.repeated == 0)
            #expect(b.delivered > 0, "the second worker shared the work: \(second.stdout)")
            try await expectSentOnce(f)
        }
    }

    @Test("serve beside a cron deliver, and two serve instances: each row sent once; the reports add up",
          arguments: ["deliver", "serve"])
    func serveBeside(other: String) async throws {
        try await SyncFixture.with(sandbox: Self.sandbox, concurrency: Self.lanes) { f in
            // serve runs what is due: a definition of its own, delivered from its backlog.
            try await f.db.query("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, \(Self.rows)) i
                """)
            try await f.define(#"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            let (process, out, err, _) = try await f.serve(Self.leaseFlags, environment: Self.info)
            defer { if process.isRunning { process.terminate() } }
            try await f.waitFor("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'", atLeast: 20, seconds: 120)
            var otherDelivered = 0, otherRepeated = 0
            if other == "deliver" {
                let run = try await f.cli(["deliver", "--max-wait", "5"] + Self.leaseFlags)
                #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
                let r = try #require(Self.reported(run.stdout))
                (otherDelivered, otherRepeated) = (r.delivered, r.repeated)
            } else {
                let (second, out2, err2, _) = try await f.serve(Self.leaseFlags, environment: Self.info)
                defer { if second.isRunning { second.terminate() } }
                try await f.waitFor("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'",
                                    atLeast: Self.rows, seconds: 180)
                second.terminate()
                let log = await CLI.collect(second, out2, err2)
                #expect(log.status == 0, "\(log.stderr)")
                (otherDelivered, otherRepeated) = Self.servedTotals(log.stderr)
            }
            try await f.waitFor("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'",
                                atLeast: Self.rows, seconds: 180)
            process.terminate()
            let log = await CLI.collect(process, out, err)
            #expect(log.status == 0, "\(log.stderr)")
            let served = Self.servedTotals(log.stderr)
            #expect(served.delivered + otherDelivered == Self.rows, "serve: \(served), \(other): \(otherDelivered)\n\(log.stderr)")
            #expect(served.repeated == 0 && otherRepeated == 0)
            #expect(otherDelivered > 0, "the second worker shared the work")
            try await expectSentOnce(f)
        }
    }

    @Test("a request outliving its lease while renewals are blocked is cut off before the lease runs out: retried, never counted delivered")
    func requestCutAtLease() async throws {
        // The sandbox applies the request and answers its head at once, then trickles Vero's
        // answer over 35 s; the request timeout is 60 s, the lease 20 s (a loaded machine took
        // more than 4 s from claim to send: with less than half a lease left a row is not sent).
        try await SyncFixture.with(sandbox: SandboxConfiguration(responseFault: .slowBody), concurrency: 1) { f in
            try await f.seedOutbox(count: 1)
            let options = DeliveryOptions(leaseSeconds: 20, maxWaitSeconds: 0, requestTimeoutSeconds: 60)
            let worker = Task { try await f.deliver(options) }
            // The request is in flight once the sandbox has it.
            try await eventually(seconds: 120, every: .milliseconds(50), "the request in flight") {
                try await !f.sandboxRequests().requests.isEmpty
            }
            // Another session holds the row for 26 s: the worker's renewals wait, its lease runs
            // down while the answer trickles in.
            let blocker = try await PostgresConnection.connect(f.url)
            try await blocker.query("""
                WITH held AS (SELECT id FROM engage.outbox FOR UPDATE) SELECT pg_sleep(26) FROM held
                """)
            await blocker.close()
            let report = try await worker.value
            let row = try await f.db.query("SELECT status, attempts, last_error, locked_by FROM engage.outbox")
                .map { $0.values.map { $0 ?? "NULL" }.joined(separator: " | ") }
            let sent = try await f.sandboxRequests().requests.count
            #expect(report.delivered == 0 && report.retried == 1, "\(report.summary); outbox: \(row); the sandbox got \(sent)")
            #expect(try await f.count("""
                SELECT count(*)::int AS c FROM engage.outbox
                WHERE status = 'pending' AND attempts = 1 AND last_status_code IS NULL
                  AND last_error = 'cut off: the row''s lease was about to run out (its renewals failed)'
                """) == 1, "outbox: \(row)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger") == 0)
        }
    }
}
