import AsyncHTTPClient
import EngageCore
import EngageStore
import EngageSync
import Foundation
import Testing
import TestSupport
import VeroSandbox

/// The deliverer in process, against the sandbox over HTTP: retries, Retry-After, a 400, a
/// wrong token.
@Suite("Delivery to the sandbox over HTTP")
struct DelivererTests {
    @Test("10,000 rows: one successful request each, and the ledger equals the sandbox's users")
    func tenThousand() async throws {
        try await SyncFixture.with { f in
            try await f.seedOutbox(count: 10_000)
            let report = try await f.deliver()
            #expect(report.delivered == 10_000)
            #expect(report.requests == 10_000)
            let listing = try await f.sandboxRequests()
            let ok = listing.requests.filter { $0.status == 200 }
            #expect(ok.count == 10_000)
            #expect(Set(ok.compactMap(\.userID)).count == 10_000)
            let users = try await f.sandboxUsers()
            let ledger = try await f.db.query("""
                SELECT p.user_id, l.value::text AS value FROM engage.ledger l JOIN engage.profiles p USING (profile_id)
                """)
            #expect(ledger.count == users.count)
            for row in ledger {
                let user = try row.decode(String.self, "user_id")
                #expect(users[user]?.data["test_aud"] == .bool(true))
                #expect(try row.decode(String.self, "value") == "true")
            }
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered' AND attempts = 1 AND delivered_at IS NOT NULL") == 10_000)
            // The stored request has no token.
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE strpos(request::text, \(SyncFixture.token)) > 0") == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE request IS NULL") == 0)
        }
    }

    @Test("30% of requests fail with 503: everything is delivered eventually, attempts recorded")
    func flakyDestination() async throws {
        // 30 attempts: ten 503s in a row would befall one of the 1,000 rows in 170 runs.
        try await SyncFixture.with(sandbox: SandboxConfiguration(failRate: 0.3, failStatus: 503), maxAttempts: 30) { f in
            try await f.seedOutbox(count: 1_000)
            // A bounded wait long enough for a loaded machine: delivery returns once nothing waits.
            let report = try await f.deliver(DeliveryOptions(maxWaitSeconds: 300, retry: RetryPolicy(baseSeconds: 0.02, capSeconds: 0.2)))
            let undelivered = try await f.db.query("""
                SELECT id, status, attempts, last_status_code, next_attempt_at - now() AS due_in, locked_until - now() AS lease_left
                FROM engage.outbox WHERE status <> 'delivered'
                """).map { r in ["id", "status", "attempts", "last_status_code", "due_in", "lease_left"].map { "\($0)=\(r[$0] ?? "-")" }.joined(separator: " ") }
            #expect(report.delivered == 1_000, "\(report); not delivered: \(undelivered)")
            #expect(report.retried > 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 1_000)
            let attempts = try await f.count("SELECT sum(attempts)::int AS c FROM engage.outbox")
            let listing = try await f.sandboxRequests()
            #expect(attempts == listing.total) // every attempt recorded, one per request
            #expect(listing.requests.filter { $0.status == 503 }.count == attempts - 1_000)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger") == 1_000)
        }
    }

    @Test("429 with Retry-After: the retry waits at least that long")
    func retryAfterHonoured() async throws {
        // 5/s against a first burst of `concurrency` (16) requests: 429s are certain however
        // slow the machine is.
        try await SyncFixture.with(sandbox: SandboxConfiguration(rateLimit: 5)) { f in
            try await f.seedOutbox(count: 40)
            let report = try await f.deliver(DeliveryOptions(maxWaitSeconds: 30, retry: RetryPolicy(baseSeconds: 0.001, capSeconds: 0.01)))
            #expect(report.delivered == 40)
            let requests = try await f.sandboxRequests().requests
            let limited = requests.filter { $0.status == 429 }
            #expect(!limited.isEmpty)
            for r in limited {
                let next = requests.filter { $0.userID == r.userID && $0.at > r.at }.map(\.at).min()
                let gap = (next ?? .infinity) - r.at
                #expect(gap >= 0.99, "retried \(r.userID ?? "?") after \(gap) s")
            }
        }
    }

    @Test("a 400 row is failed with its body kept; the others are delivered")
    func badRequest() async throws {
        try await SyncFixture.with { f in
            try await f.seedOutbox(count: 200, badEmailFor: [7])
            let report = try await f.deliver()
            #expect(report.delivered == 199)
            #expect(report.failed == 1)
            let row = try #require(try await f.db.query("SELECT status, last_status_code, last_error, attempts FROM engage.outbox WHERE profile_id = 'p7'").first)
            #expect(try row.decode(String.self, "status") == "failed")
            #expect(try row.decode(Int.self, "last_status_code") == 400)
            #expect(try row.decode(String.self, "last_error").contains("email is malformed"))
            #expect(try row.decode(Int.self, "attempts") == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger WHERE profile_id = 'p7'") == 0)
        }
    }

    @Test("a wrong token stops delivery after at most `concurrency` requests")
    func wrongToken() async throws {
        try await SyncFixture.with(sandbox: SandboxConfiguration(token: "the-right-token"), concurrency: 8) { f in
            try await f.seedOutbox(count: 500)
            await #expect(throws: CredentialsRejected.self) { try await f.deliver() }
            let listing = try await f.sandboxRequests()
            #expect(listing.total >= 1 && listing.total <= 8)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending' AND locked_by IS NULL") == 500)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger") == 0)
        }
    }
}
