import EngageCore
import Foundation
import PostgresClient
import Testing
import TestSupport

/// `engage-sync explain` as a user runs it: the tree and what is kept, as text and as JSON;
/// bad input is a clear error with exit 2.
@Suite("explain through the CLI")
struct ExplainCommandTests {
    @Test("after a delivered run: the verdict with its evidence, the snapshot and what Vero was sent; --json is engage.explain's")
    func afterARun() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits) VALUES ('p1', 'u1', 'u1@example.com', '{"plan": "pro"}');
                INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
                VALUES ('e1', 'p1', 'Order Completed', '{"total": 120}', '2026-05-30T10:00:00Z');
                """)
            try await f.define("""
                {"name": "Pro Buyers", "key": "pro_buyers", "type": "audience", "condition": {"all": [
                  {"event": "Order Completed", "within": "30d"}, {"trait": "plan", "equals": "pro"}]}}
                """)
            let now = ["ENGAGE_SYNC_NOW": "2026-06-01T12:00:00Z"]
            #expect(try await f.cli(["run"], environment: now).status == 0)
            let text = try await f.cli(["explain", "pro_buyers", "--user-id", "u1"], environment: now)
            #expect(text.status == 0, "\(text.stderr)")
            for line in ["pro_buyers for p1 (user u1, u1@example.com) at 2026-06-01T12:00:00", ": member",
                         #"event "Order Completed" since 2026-05-02T12:00:00"#, ": 1 (at least 1): true; first 2026-05-30T10:00:00",
                         #"trait plan equals "pro": found "pro": true"#, "snapshot: true since 2026-06-01T12:00:00",
                         "ledger: u1 holds true", ": enter true to u1: delivered, 1 attempt"] {
                #expect(text.stdout.contains(line), "\(line) not in:\n\(text.stdout)")
            }
            // Once the order is older than the window it is not a member: --as-of moves the instant.
            let later = try await f.cli(["explain", "pro_buyers", "--email", "u1@example.com", "--as-of", "2026-07-05T00:00:00Z"])
            #expect(later.status == 0 && later.stdout.contains(": not a member") && later.stdout.contains(": 0 (at least 1): false"),
                    "\(later.stdout)\(later.stderr)")
            let json = try await f.cli(["explain", "pro_buyers", "--profile-id", "p1", "--json"], environment: now)
            let parsed = try JSONValue.parse(json.stdout)
            #expect(parsed["value"] == true && parsed["explanation"]?["kind"] == "all", "\(json.stdout)")
        }
    }

    @Test("an unknown key or profile, a bad --as-of, no profile or two: a clear error, exit 2")
    func badInput() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("INSERT INTO engage.profiles (profile_id, user_id) VALUES ('p1', 'u1')")
            try await f.define(#"{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}}"#)
            for (arguments, message) in [(["explain", "nope", "--user-id", "u1"], "no active definition has the key \"nope\""),
                                         (["explain", "pro", "--user-id", "u9"], "no profile has the user id \"u9\""),
                                         (["explain", "pro", "--profile-id", "p9"], "no profile has the profile id \"p9\""),
                                         (["explain", "pro", "--user-id", "u1", "--as-of", "yesterday"], "--as-of must be an ISO-8601 instant"),
                                         (["explain", "pro"], "give one of --user-id, --email or --profile-id"),
                                         (["explain", "pro", "--user-id", "u1", "--email", "a@b.co"], "give one of")] {
                let run = try await f.cli(arguments)
                #expect(run.status == 2 && run.stderr.contains(message), "\(arguments): \(run.status) \(run.stderr)")
            }
        }
    }
}
