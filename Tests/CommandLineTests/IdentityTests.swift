import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// Exits reach the Vero user who holds the value: profiles deleted, user ids
/// changed or reused, emails changed, rows whose fate at Vero is unknown, and timestamp
/// bounds exact to the microsecond. Everything through the executable, against the sandbox.
@Suite("Vero identity: exits reach the user who holds the value")
struct IdentityTests {
    static let pro = #"{"name": "Pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#
    static let orders = #"{"name": "Order Count", "type": "trait", "value": {"aggregate": "count", "event": "Order Completed"}}"#

    /// Profiles p1…pN with user ids u1…uN, plan `pro`, and two orders each.
    func seed(_ f: SyncFixture, profiles: Int) async throws {
        try await f.db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email, traits)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(1, \(profiles)) i
            """)
        try await f.db.query("""
            INSERT INTO engage.events (message_id, profile_id, event, occurred_at)
            SELECT 'o' || i || '-' || k, 'p' || i, 'Order Completed', now() - interval '1 day'
            FROM generate_series(1, \(profiles)) i, generate_series(1, 2) k
            """)
    }

    func runAll(_ f: SyncFixture, _ extra: [String] = []) async throws {
        let run = try await f.cli(["run", "--all"] + extra)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
    }

    func expectConverged(_ f: SyncFixture) async throws {
        let pro = try await f.wrongHolders(key: "pro", exit: false)
        #expect(pro.sandbox.isEmpty, "\(pro.sandbox.prefix(10))")
        #expect(pro.ledger.isEmpty, "\(pro.ledger.prefix(10))")
        let orders = try await f.wrongHolders(key: "order_count", exit: 0)
        #expect(orders.sandbox.isEmpty, "\(orders.sandbox.prefix(10))")
        #expect(orders.ledger.isEmpty, "\(orders.ledger.prefix(10))")
    }

    @Test("a deleted profile's exit and empty trait value go to the Vero id it had")
    func deletedProfile() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 2)
            try await f.define(Self.pro)
            try await f.define(Self.orders)
            try await runAll(f)
            #expect(try await f.sandboxUsers()["u2"]?.data["pro"] == .bool(true))
            // GDPR erasure: the profile and its events are gone.
            try await f.db.execute("DELETE FROM engage.events WHERE profile_id = 'p2'; DELETE FROM engage.profiles WHERE profile_id = 'p2'")
            try await runAll(f)
            let u2 = try await f.sandboxUsers()["u2"]
            #expect(u2?.data["pro"] == .bool(false))
            #expect(u2?.data["order_count"] == .int(0))
            let exit = try #require(try await f.db.query("""
                SELECT profile_id, user_id, op, status FROM engage.sync_changelog WHERE key = 'pro' AND op = 'exit'
                """).first)
            #expect(exit["profile_id"] == "p2")
            #expect(exit["user_id"] == "u2")
            #expect(exit["status"] == "delivered")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.delivery_failures") == 0)
            try await expectConverged(f)
        }
    }

    @Test("a changed user id: the old id is told false / the empty value, the new id gets the value; a reused id holds its new owner's value")
    func changedUserID() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 4)
            try await f.define(Self.pro)
            try await f.define(Self.orders)
            try await runAll(f)
            let before = try await f.sandboxRequests().total
            // p1 logs in as u1-new; p3 changes its email only.
            try await f.db.execute("""
                UPDATE engage.profiles SET user_id = 'u1-new' WHERE profile_id = 'p1';
                UPDATE engage.profiles SET email = 'new3@example.com' WHERE profile_id = 'p3';
                """)
            try await runAll(f)
            var users = try await f.sandboxUsers()
            #expect(users["u1"]?.data["pro"] == .bool(false))
            #expect(users["u1"]?.data["order_count"] == .int(0))
            #expect(users["u1-new"]?.data["pro"] == .bool(true))
            #expect(users["u1-new"]?.data["order_count"] == .int(2))
            #expect(users["u1-new"]?.email == "u1@example.com")
            // An email change alone sends nothing and keeps the Vero id.
            let sent = try await f.sandboxRequests().requests.dropFirst(before)
            #expect(Set(sent.compactMap(\.userID)) == ["u1", "u1-new"], "\(sent.map(\.userID))")
            try await expectConverged(f)

            // p2 takes over u1 (freed above) and p3 leaves the audience: u1 holds p2's value
            // again, u2 is no longer owned, and p3's exit carries its new email.
            try await f.db.execute("""
                UPDATE engage.profiles SET user_id = 'u1' WHERE profile_id = 'p2';
                UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id = 'p3';
                """)
            try await runAll(f)
            users = try await f.sandboxUsers()
            #expect(users["u1"]?.data["pro"] == .bool(true))
            #expect(users["u1"]?.data["order_count"] == .int(2))
            #expect(users["u2"]?.data["pro"] == .bool(false))
            #expect(users["u3"]?.data["pro"] == .bool(false))
            #expect(users["u3"]?.email == "new3@example.com")
            try await expectConverged(f)
            // Quiet again: nothing more to send.
            let settled = try await f.sandboxRequests().total
            try await runAll(f)
            #expect(try await f.sandboxRequests().total == settled)
        }
    }

    @Test("a profile deleted while its true is pending: Vero ends holding false, whether the true was sent before or after")
    func deletedWhilePending() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 3)
            try await f.define(Self.pro)
            // The true is enqueued (its first attempt fails: 503), then delivered by a `deliver`
            // that runs after the deletion.
            try await f.setFaults(#"{"fail_rate": 1, "fail_status": 503}"#)
            #expect(try await f.cli(["run", "--max-wait", "0"]).status == 3)
            try await f.setFaults(#"{"fail_rate": 0}"#)
            try await f.db.execute("UPDATE engage.outbox SET next_attempt_at = now()")
            try await f.db.execute("DELETE FROM engage.events WHERE profile_id = 'p2'; DELETE FROM engage.profiles WHERE profile_id = 'p2'")
            #expect(try await f.cli(["deliver", "--max-wait", "0"]).status == 0)
            #expect(try await f.sandboxUsers()["u2"]?.data["pro"] == .bool(true))
            try await runAll(f)
            #expect(try await f.sandboxUsers()["u2"]?.data["pro"] == .bool(false))

            // Vero applies p3's true but the answer is cut off: not confirmed, so retried. The
            // profile is deleted before the retry: the run supersedes the true and, since Vero
            // may hold it, tells u3 false.
            try await f.db.execute("UPDATE engage.profiles SET traits = '{}' WHERE profile_id = 'p3'")
            try await runAll(f)
            try await f.db.execute("UPDATE engage.profiles SET traits = '{\"plan\": \"pro\"}' WHERE profile_id = 'p3'")
            #expect(try await f.cli(["run", "--all", "--no-deliver"]).status == 0)
            try await f.setFaults(#"{"response": "truncated"}"#)
            _ = try await f.cli(["deliver", "--max-wait", "0"])
            try await f.setFaults(#"{"response": null}"#)
            #expect(try await f.sandboxUsers()["u3"]?.data["pro"] == .bool(true))
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE profile_id = 'p3' AND status = 'pending' AND attempts = 1") == 1)
            try await f.db.execute("DELETE FROM engage.events WHERE profile_id = 'p3'; DELETE FROM engage.profiles WHERE profile_id = 'p3'")
            try await runAll(f)
            #expect(try await f.sandboxUsers()["u3"]?.data["pro"] == .bool(false))
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE profile_id = 'p3' AND value = 'true' AND status = 'superseded'") == 1)
            try await expectConverged(f)
        }
    }

    @Test("a profile that gains a user id and is delivered leaves delivery_failures; sync_changelog keeps the skip")
    func gainsUserID() async throws {
        try await SyncFixture.with { f in
            try await seed(f, profiles: 2)
            try await f.db.execute(#"INSERT INTO engage.profiles (profile_id, email, traits) VALUES ('anon', 'a@example.com', '{"plan": "pro"}')"#)
            try await f.define(Self.pro)
            let first = try await f.cli(["run", "--strict"]) // the skip counts: exit 3
            #expect(first.status == 3, "\(first.stdout)")
            #expect(try await f.db.query("SELECT profile_id, reason FROM engage.delivery_failures").map { "\($0["profile_id"] ?? "")|\($0["reason"] ?? "")" }
                == ["anon|missing_user_id"])
            try await f.db.execute("UPDATE engage.profiles SET user_id = 'u-anon' WHERE profile_id = 'anon'")
            try await runAll(f)
            #expect(try await f.sandboxUsers()["u-anon"]?.data["pro"] == .bool(true))
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.delivery_failures") == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.sync_changelog WHERE profile_id = 'anon' AND status = 'skipped'") == 1)
            try await expectConverged(f)

            // p1 leaves and Vero refuses its exit (400); then p1 comes back under a new user id and
            // is delivered there. u1 still holds true, so the failure stays listed; a resync sends
            // the exit again, and once delivered it is resolved.
            try await f.db.execute("UPDATE engage.profiles SET traits = '{}' WHERE profile_id = 'p1'")
            try await f.setFaults(#"{"fail_rate": 1, "fail_status": 400}"#)
            #expect(try await f.cli(["run", "--all"]).status == 3)
            try await f.setFaults(#"{"fail_rate": 0}"#)
            try await f.db.execute(#"UPDATE engage.profiles SET traits = '{"plan": "pro"}', user_id = 'u1-new' WHERE profile_id = 'p1'"#)
            try await runAll(f)
            #expect(try await f.sandboxUsers()["u1-new"]?.data["pro"] == .bool(true))
            #expect(try await f.db.query("SELECT user_id, op, status FROM engage.delivery_failures").map {
                "\($0["user_id"] ?? "")|\($0["op"] ?? "")|\($0["status"] ?? "")" } == ["u1|exit|failed"])
            #expect(try await f.sandboxUsers()["u1"]?.data["pro"] == .bool(true))
            let resync = try await f.cli(["resync", "--key", "pro"])
            #expect(resync.status == 0, "\(resync.stdout)\n\(resync.stderr)")
            #expect(try await f.sandboxUsers()["u1"]?.data["pro"] == .bool(false))
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.delivery_failures") == 0)
            try await expectConverged(f)
        }
    }

    @Test("kill -9 mid-delivery of a run full of changed ids and deleted profiles: a plain run converges",
          .timeLimit(.minutes(20)))
    func crashDuringIdentityChanges() async throws {
        let concurrency = 16
        try await SyncFixture.with(sandbox: SandboxConfiguration(latencyMilliseconds: 1), concurrency: concurrency) { f in
            try await seed(f, profiles: 8_000)
            try await f.define(Self.pro)
            try await runAll(f)
            let before = try await f.sandboxRequests().requests.filter { $0.status == 200 }.count
            // 2,000 profiles change their user id, 1,200 are deleted: 5,200 requests to make.
            try await f.db.execute("""
                UPDATE engage.profiles SET user_id = 'n' || substr(profile_id, 2) WHERE substr(profile_id, 2)::int <= 2000;
                DELETE FROM engage.events WHERE substr(profile_id, 2)::int BETWEEN 2001 AND 3200;
                DELETE FROM engage.profiles WHERE substr(profile_id, 2)::int BETWEEN 2001 AND 3200;
                """)
            let (process, out, err) = try CLI.start(["run", "--all", "--lease", "5", "--database-url", f.url],
                                                    environment: [SyncFixture.tokenVariable: SyncFixture.token])
            try await f.waitFor("""
                SELECT count(*)::int AS c FROM engage.outbox
                WHERE status = 'delivered' AND run_id = (SELECT max(id) FROM engage.sync_runs)
                """, atLeast: 1_000)
            kill(process.processIdentifier, SIGKILL)
            _ = await CLI.collect(process, out, err)
            try await runAll(f, ["--lease", "5", "--max-wait", "20"])
            try await expectConverged(f)
            let sent = try await f.sandboxRequests().requests.filter { $0.status == 200 }.count - before
            #expect(sent >= 5_200 && sent - 5_200 <= concurrency, "sent \(sent) for 5,200 changes")
            print("crashDuringIdentityChanges: sent twice: \(sent - 5_200)")
        }
    }

    @Test("before/after bounds are exact to the microsecond under a non-UTC database TimeZone")
    func microsecondBounds() async throws {
        try await SyncFixture.with { f in
            let database = try #require(try await f.db.query("SELECT current_database() AS d").first?.decode(String.self, "d"))
            try await f.db.execute("ALTER DATABASE \(unescaped: database) SET TimeZone = 'Asia/Kolkata'")
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, traits) VALUES
                    ('before', 'u-before', '{"ctx": {"signup": "2026-08-21T07:16:15.260981Z"}}'),
                    ('equal', 'u-equal', '{"ctx": {"signup": "2026-08-21T07:16:15.260982Z"}}'),
                    ('after', 'u-after', '{"ctx": {"signup": "2026-08-21T07:16:15.260983Z"}}'),
                    ('offset', 'u-offset', '{"ctx": {"signup": "2026-08-21T12:46:15.260983+05:30"}}');
                """)
            try await f.define(#"{"name": "Signed Up After", "type": "audience", "condition": {"trait": "ctx.signup", "after": "2026-08-21T07:16:15.260982Z"}}"#)
            try await f.define(#"{"name": "Signed Up Before", "type": "audience", "condition": {"trait": "ctx.signup", "before": "2026-08-21T12:46:15.260982+05:30"}}"#)
            try await runAll(f)
            let users = try await f.sandboxUsers()
            #expect(Set(users.filter { $0.value.data["signed_up_after"] == .bool(true) }.keys) == ["u-after", "u-offset"])
            #expect(Set(users.filter { $0.value.data["signed_up_before"] == .bool(true) }.keys) == ["u-before"])
            let preview = try await f.cli(["preview", "signed_up_after"])
            #expect(preview.stdout.contains("2 members"), "\(preview.stdout)")
            // The bound parameter itself, read in a session whose TimeZone is not UTC.
            try await f.db.execute("SET TimeZone = 'America/St_Johns'")
            let bound = try #require(Timestamp.parse("2026-08-21T07:16:15.260982Z"))
            let same = try await f.db.query("SELECT \(bound)::timestamptz = '2026-08-21 07:16:15.260982+00'::timestamptz AS same")
            #expect(try same.first?.decode(Bool.self, "same") == true)
        }
    }
}
