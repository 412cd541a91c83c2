import AsyncHTTPClient
import NIOHTTP1
import EngageCore
import EngageStore
import EngageSync
import Foundation
import Testing
import TestSupport
import VeroSandbox

@Suite("Delivery to the sandbox over HTTP")
struct DeliveryTests {
    @Test("destination add takes http(s) URLs without credentials; a link-local host needs --allow-private, a private one is warned of")
    func baseURLChecked() async throws {
        try await SyncFixture.with { f in
            for (url, reason) in [("file:///etc/passwd", "must be an http(s) URL"), ("ftp://vero.example", "must be an http(s) URL"),
                                  ("https://user:secret@api.getvero.com", "must not carry credentials"),
                                  ("http://169.254.169.254/latest", "link-local"), ("http://[fe80::1]:8080", "link-local")] {
                let add = try await f.cli(["destination", "add", "other", "--base-url", url])
                #expect(add.status == 2 && add.stderr.contains(reason), "\(url): \(add.stderr)")
            }
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.destinations WHERE name = 'other'") == 0)
            let metadata = try await f.cli(["destination", "add", "other", "--base-url", "http://169.254.169.254", "--allow-private"])
            #expect(metadata.status == 0, "\(metadata.stderr)")
            let lan = try await f.cli(["destination", "add", "other", "--base-url", "http://10.1.2.3:8080"])
            #expect(lan.status == 0 && lan.stderr.contains("warning: --base-url 10.1.2.3 is a private network address"), "\(lan.stderr)")
            let loopback = try await f.cli(["destination", "add", "other", "--base-url", "http://127.0.0.1:9"])
            #expect(loopback.status == 0 && loopback.stderr.isEmpty, "\(loopback.stderr)")
            let named = try await f.cli(["destination", "add", "other", "--base-url", "https://fdic.example.com"])
            #expect(named.status == 0 && named.stderr.isEmpty, "\(named.stderr)")
        }
    }

    @Test("deliver for every destination: a paused one is reported and the others are delivered; exit 1")
    func pausedAmongOthers() async throws {
        try await SyncFixture.with { f in
            try await f.seedOutbox(count: 20)
            // "archive" sorts before "vero": a paused destination first must not stop the rest.
            let other = try await VeroSandbox().start()
            let archive = try await DestinationRepository(f.db).upsert(name: "archive", settings: DestinationSettings(
                baseURL: other.baseURL, tokenEnv: SyncFixture.tokenVariable, rate: 10_000))
            try await DestinationRepository(f.db).pause(id: archive.id, reason: "HTTP 401 from Vero: the auth token was rejected")
            let deliver = try await f.cli(["deliver", "--max-wait", "0"])
            #expect(deliver.status == 1, "\(deliver.stdout)\n\(deliver.stderr)")
            #expect(deliver.stderr.contains("destination archive is paused (HTTP 401 from Vero"), "\(deliver.stderr)")
            #expect(deliver.stdout.contains("vero: delivered 20"), "\(deliver.stdout)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 20)
            await other.stop()
        }
    }

    @Test("a 401 pauses the destination: nothing is claimed until `destination resume`; status and metrics say so")
    func paused() async throws {
        try await SyncFixture.with(sandbox: SandboxConfiguration(token: "the-right-token"), concurrency: 4) { f in
            try await f.seedOutbox(count: 50)
            let rejected = try await f.cli(["deliver"])
            #expect(rejected.status == 1)
            #expect(rejected.stderr.contains("destination vero rejected the auth token (HTTP 401)"), "\(rejected.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.destinations WHERE paused_reason LIKE 'HTTP 401%'") == 1)
            let sent = try await f.sandboxRequests().total

            // Paused: even with the right token nothing is claimed or sent.
            let right = [SyncFixture.tokenVariable: "the-right-token"]
            let refused = try await f.cli(["deliver"], environment: right)
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("destination vero is paused (HTTP 401 from Vero: the auth token was rejected)"), "\(refused.stderr)")
            #expect(try await f.sandboxRequests().total == sent)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'pending' AND locked_by IS NULL") == 50)
            let status = try await f.cli(["status", "--json"])
            #expect(status.stdout.contains(#""destination_paused_at":"20"#), "\(status.stdout)")
            #expect(try await f.cli(["metrics"]).stdout.contains(#"engage_sync_destination_paused{destination="vero"} 1"#))
            #expect(try await f.cli(["destination", "list"]).stdout.contains("HTTP 401 from Vero"))

            // Re-adding it with the same settings keeps it paused; resuming sends everything.
            #expect(try await f.cli(["destination", "add", "vero", "--concurrency", "4"]).status == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.destinations WHERE paused_at IS NOT NULL") == 1)
            let resume = try await f.cli(["destination", "resume", "vero"])
            #expect(resume.status == 0, "\(resume.stderr)")
            #expect(try await f.cli(["metrics"]).stdout.contains(#"engage_sync_destination_paused{destination="vero"} 0"#))
            let delivered = try await f.cli(["deliver", "--max-wait", "0"], environment: right)
            #expect(delivered.status == 0, "\(delivered.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 50)

            // A change of settings resumes a paused destination too.
            try await f.db.execute("UPDATE engage.destinations SET paused_at = now(), paused_reason = 'HTTP 403 from Vero: the auth token was rejected'")
            #expect(try await f.cli(["destination", "add", "vero", "--concurrency", "5"]).status == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.destinations WHERE paused_at IS NULL AND paused_reason IS NULL") == 1)
        }
    }

    @Test("progress: plain lines at info level when stderr is not a terminal (done/total, rate, time left); none by default")
    func progress() async throws {
        try await SyncFixture.with { f in
            // 30,000 lines, so ingest is long enough to print a line; a third have an email (the audience).
            let lines = (1...30_000).map { i in
                let traits = i <= 10_000 ? #"{"email": "u\#(i)@example.com"}"# : #"{"plan": "free"}"#
                return #"{"type": "identify", "messageId": "m\#(i)", "userId": "u\#(i)", "traits": \#(traits)}"#
            }
            let path = try temporaryFile(lines.joined(separator: "\n"), suffix: ".ndjson")
            let verbose = ["ENGAGE_SYNC_LOG_LEVEL": "info", "ENGAGE_SYNC_PROGRESS_SECONDS": "0"]
            let ingest = try await f.cli(["ingest", path], environment: verbose)
            #expect(ingest.status == 0, "\(ingest.stderr)")
            #expect(ingest.stderr.contains("MiB (100%)"), "\(ingest.stderr)")
            #expect(ingest.stderr.contains("30,000 lines"), "\(ingest.stderr)")

            try await f.define(#"{"name": "Has Email", "type": "audience", "condition": {"trait": "email", "exists": true}}"#)
            let run = try await f.cli(["run", "--no-deliver"], environment: verbose)
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stderr.contains("evaluating: 1/1 pairs (100%)"), "\(run.stderr)")
            let deliver = try await f.cli(["deliver", "--max-wait", "0"], environment: verbose)
            #expect(deliver.status == 0, "\(deliver.stderr)")
            #expect(deliver.stderr.contains("delivering to vero: 10,000/10,000 rows (100%)"), "\(deliver.stderr)")
            #expect(deliver.stderr.contains(" left"), "a line before the end says how long is left: \(deliver.stderr)")

            // By default (warning level, not a terminal): no progress at all.
            try await f.db.execute("UPDATE engage.profiles SET email = NULL WHERE user_id IN ('u1', 'u2')")
            let quiet = try await f.cli(["run"])
            #expect(!quiet.stderr.contains("evaluating") && !quiet.stderr.contains("delivering to"), "\(quiet.stderr)")
        }
    }

    @Test("a missing token variable is an error before anything is sent")
    func missingToken() async throws {
        try await SyncFixture.with { f in
            try await f.seedOutbox(count: 3)
            try await f.db.query("UPDATE engage.destinations SET token_env = 'ENGAGE_SYNC_NO_SUCH_VARIABLE'")
            let run = try await CLI.run(["deliver", "--database-url", f.url])
            #expect(run.status == 1)
            #expect(run.stderr.contains("ENGAGE_SYNC_NO_SUCH_VARIABLE"))
            #expect(try await f.sandboxRequests().total == 0)
        }
    }

    @Test("two deliver processes at once never send a row twice")
    func twoWorkers() async throws {
        try await SyncFixture.with(sandbox: SandboxConfiguration(latencyMilliseconds: 2)) { f in
            try await f.seedOutbox(count: 3_000)
            try await f.db.query("UPDATE engage.outbox SET status = 'pending'")
            let env = [SyncFixture.tokenVariable: SyncFixture.token]
            async let a = CLI.run(["deliver", "--database-url", f.url, "--max-wait", "0"], environment: env)
            async let b = CLI.run(["deliver", "--database-url", f.url, "--max-wait", "0"], environment: env)
            let (ra, rb) = try await (a, b)
            #expect(ra.status == 0, "\(ra.stderr)")
            #expect(rb.status == 0, "\(rb.stderr)")
            let requests = try await f.sandboxRequests().requests
            #expect(requests.count == 3_000)
            #expect(Set(requests.compactMap(\.userID)).count == 3_000)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 3_000)
        }
    }

    @Test("forward: NDJSON through the mapper and the outbox; bad lines reported by number, the rest delivered")
    func forward() async throws {
        try await SyncFixture.with { f in
            let lines = [
                #"{"type": "identify", "userId": "f1", "traits": {"email": "f1@example.com", "plan": "pro"}}"#,
                #"{"type": "track", "userId": "f1", "event": "Order Completed", "properties": {"total": 5}, "integrations": {"Vero": {"tags": {"action": "add", "values": ["buyer"]}}}}"#,
                "{not json",
                #"{"type": "track", "userId": "f2"}"#,
                #"{"type": "identify", "anonymousId": "anon"}"#,
                "",
                #"{"type": "alias", "previousId": "f1", "userId": "f1-new"}"#,
            ]
            let file = try temporaryFile(lines.joined(separator: "\n"), suffix: ".ndjson")
            let run = try await CLI.run(["forward", file, "--destination", "vero", "--database-url", f.url],
                                        environment: [SyncFixture.tokenVariable: SyncFixture.token])
            #expect(run.status == 3, "\(run.stderr)")
            #expect(run.stderr.contains("line 3: invalid JSON"))
            #expect(run.stderr.contains("line 4: a track call needs a non-empty \"event\""))
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'delivered'") == 3)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox WHERE status = 'rejected' AND reason LIKE 'missing_user_id%'") == 1)
            let users = try await f.sandboxUsers()
            #expect(users["f1-new"]?.tags == ["buyer"])
            #expect(users["f1-new"]?.data["plan"] == "pro")
            #expect(users["f1-new"]?.events == 1)
        }
    }
}
