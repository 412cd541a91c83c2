import AsyncHTTPClient
@testable import EngageStore
import EngageServer
import NIOHTTP1
import Foundation
import StatusPage
import Testing
import TestSupport

/// The status page served by `serve`, read by a real browser: headless Chromium
/// (Debian's, installed by Scripts/test.sh) renders it and hands back its DOM.
@Suite("status page: in headless Chromium, behind ENGAGE_UI_TOKEN beyond loopback")
struct StatusPageTests {
    /// Posts the sign-in form with `token`; the answer's status and cookie (not following the redirect).
    func signIn(_ url: String, _ token: String) async throws -> (status: Int, cookie: String?) {
        let answer = try await HTTP.post(url + "/login", "token=" + (token.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""),
                                         headers: [("Content-Type", "application/x-www-form-urlencoded")], followRedirects: false)
        return (answer.status, answer.headers["Set-Cookie"].first)
    }

    /// Chromium's DOM of `url` after it rendered the page.
    func dom(_ url: String) async throws -> String {
        try await chromium(["--dump-dom", url]).stdout
    }

    /// Runs headless Chromium (as root it needs --no-sandbox; its profile is a fresh directory).
    func chromium(_ arguments: [String]) async throws -> (status: Int32, stdout: String) {
        let binary = ProcessInfo.processInfo.environment["CHROMIUM"] ?? "/usr/bin/chromium"
        try #require(FileManager.default.isExecutableFile(atPath: binary), "no Chromium at \(binary): Scripts/test.sh installs it")
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile)",
                             "--window-size=1280,1400", "--hide-scrollbars"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = await CLI.offPool { out.fileHandleForReading.readDataToEndOfFile() }
        await CLI.offPool { process.waitUntilExit() }
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The text of the first `<tr …>` of `dom` whose opening tag has every one of `attributes`.
    func row(_ dom: String, _ attributes: [String]) -> String? {
        dom.components(separatedBy: "<tr ").dropFirst().first { chunk in
            let tag = chunk.prefix { $0 != ">" }
            return attributes.allSatisfy { tag.contains($0) }
        }.map { $0.components(separatedBy: "</tr>")[0] }
    }

    /// The `data-value` of the cell `field` in a row's text.
    func value(_ row: String, _ field: String) -> Int? {
        guard let pattern = try? Regex<(Substring, Substring)>("data-field=\"\(field)\" data-value=\"([0-9]+)\"") else { return nil }
        return row.firstMatch(of: pattern).flatMap { Int($0.1) }
    }

    @Test("after a full and an incremental sync, Chromium shows each pair's counts, a chart of the runs' sizes, the failure's reason, and a hand-counted profile's audiences, timeline and explanation")
    func pageInBrowser() async throws {
        try await SyncFixture.with { f in
            // 25 on the pro plan (u7's email is one Vero refuses with a 400), 15 on the free one.
            try await f.db.execute("""
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, CASE WHEN i = 7 THEN 'not-an-email' ELSE 'u' || i || '@example.com' END,
                       jsonb_build_object('plan', CASE WHEN i <= 25 THEN 'pro' ELSE 'free' END)
                FROM generate_series(1, 40) i;
                """)
            try await f.define("""
                [{"name": "Pro", "key": "pro", "type": "audience", "condition": {"trait": "plan", "equals": "pro"}},
                 {"name": "Free", "key": "free", "type": "audience", "condition": {"trait": "plan", "equals": "free"}}]
                """)
            #expect(try await f.cli(["run", "--all"]).status == 3, "u7's row fails")
            // Five leave the pro plan for the free one, three new pro profiles come: an incremental run.
            try await f.db.execute("""
                UPDATE engage.profiles SET traits = '{"plan": "free"}' WHERE profile_id IN ('p1', 'p2', 'p3', 'p4', 'p5');
                INSERT INTO engage.profiles (profile_id, user_id, email, traits)
                SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', '{"plan": "pro"}' FROM generate_series(41, 43) i;
                """)
            #expect(try await f.cli(["run", "--all"]).status == 0)
            #expect(try await f.count("""
                SELECT count(*)::int AS c FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                WHERE c.key = 'pro' AND r.evaluation = 'incremental'
                """) == 1)

            let (process, out, err, url) = try await f.serve()
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            let overview = try await dom(url + "/")
            // Each pair's row, counted by hand: pro 25 − 5 + 3 = 23 members, 22 delivered, u7 failed;
            // free 15 + 5 = 20, all delivered.
            let pro = try #require(row(overview, [#"data-key="pro""#, #"data-destination="vero""#]), "\(overview)")
            #expect(value(pro, "members") == 23 && value(pro, "delivered") == 22 && value(pro, "pending") == 0
                    && value(pro, "failed") == 1 && value(pro, "skipped") == 0, "\(pro)")
            #expect(pro.contains(#"data-field="last-run-mode">incremental<"#), "\(pro)")
            let free = try #require(row(overview, [#"data-key="free""#]))
            #expect(value(free, "members") == 20 && value(free, "delivered") == 20 && value(free, "failed") == 0, "\(free)")
            #expect(overview.contains(#"data-total="failed"><span class="muted">Failed</span><b>1</b>"#), "\(overview)")

            // The definition's page: a point per run at the run's size, the higher size drawn higher.
            let page = try await dom(url + "/definitions/pro")
            let points = page.matches(of: #/<circle data-run="([0-9]+)" data-members="([0-9]+)" cx="([0-9.]+)" cy="([0-9.]+)"/#)
            #expect(points.map { Int($0.2) } == [25, 23], "\(page)")
            let runs = try await f.db.query("""
                SELECT r.id FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                WHERE c.key = 'pro' ORDER BY r.started_at, r.id
                """).map { try $0.decode(Int.self, "id") }
            #expect(points.map { Int($0.1) } == runs)
            if points.count == 2 {
                #expect(Double(points[0].4)! < Double(points[1].4)!, "25 members drawn above 23")
                #expect(Double(points[0].3)! < Double(points[1].3)!, "in run order")
            }
            // u7's failure, grouped by its reason, with u7 as the example.
            let failure = try #require(row(page, [#"data-status="failed""#]), "\(page)")
            let reason = try #require(try await f.db.query("SELECT reason FROM engage.delivery_failures WHERE key = 'pro'").first?
                .decode(String.self, "reason"))
            #expect(failure.contains(">400<") && failure.contains(">u7<"), "\(failure)")
            #expect(failure.contains(String(reason.prefix(20))), "\(failure) / \(reason)")
            #expect(page.contains(#"id="definition""#) && page.contains(#""equals": "pro""#))

            // The destination's page: its runs, and the 400 among failures by status code.
            let destination = try await dom(url + "/destinations/vero")
            #expect(row(destination, [#"data-code="400""#]).map { value($0, "rows") == 1 } == true, "\(destination)")
            #expect(destination.contains(#"id="active""#))
            #expect(!destination.contains(SyncFixture.token))

            // A profile counted by hand: p1 left pro for free in the second run. Found by its user
            // id; it holds free only; the exit from pro is on its timeline, sent and delivered; and
            // the explanation its page links to says why it holds free.
            let search = try await dom(url + "/profiles?q=u1")
            #expect(search.contains(#"href="/profiles/p1""#) && !search.contains(#"href="/profiles/p10""#), "\(search)")
            let profile = try await dom(url + "/profiles/p1")
            #expect(row(profile, [#"data-key="free""#, #"data-type="audience""#]) != nil, "\(profile)")
            #expect(row(profile, [#"data-key="pro""#, #"data-type="audience""#]) == nil, "no longer pro: \(profile)")
            #expect(row(profile, [#"data-kind="ended""#, #"data-key="pro""#]) != nil, "the exit on the timeline: \(profile)")
            #expect(row(profile, [#"data-kind="sent""#, #"data-key="pro""#]).map { $0.contains("exit false to u1: delivered") } == true,
                    "\(profile)")
            #expect(!profile.contains("u1@example.com"), "emails masked")
            let link = try #require(profile.firstMatch(of: #/data-explain="free" href="([^"]+)"/#).map { String($0.1) }, "\(profile)")
            let why = try await dom(url + link)
            #expect(why.contains("free for p1 (user u1, u***@example.com)") && why.contains(": member"), "\(why)")
            #expect(why.contains(#"trait plan equals "free": found "free": true"#), "\(why)")
            #expect(why.contains("snapshot: true since"), "\(why)")

            // A screenshot, kept as the test's artifact.
            let artifacts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/artifacts").standardized
            try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
            for (name, path) in [("status-page.png", "/"), ("status-page-definition.png", "/definitions/pro")] {
                let shot = artifacts.appendingPathComponent(name).path
                try? FileManager.default.removeItem(atPath: shot)
                _ = try await chromium(["--screenshot=\(shot)", url + path])
                let size = (try? FileManager.default.attributesOfItem(atPath: shot)[.size] as? Int) ?? 0
                #expect(size > 10_000, "a screenshot at \(shot)")
            }
            kill(process.processIdentifier, SIGTERM)
            #expect(await CLI.collect(process, out, err).status == 0)
        }
    }

    @Test("beyond loopback serve refuses to start without ENGAGE_UI_TOKEN; with it, the page wants the token, as a bearer or a cookie")
    func token() async throws {
        try await SyncFixture.with { f in
            let refused = try await f.cli(["serve", "--host", "0.0.0.0", "--port", "0"], environment: ["ENGAGE_UI_TOKEN": ""])
            #expect(refused.status == 64 || refused.status == 2, "\(refused)")
            #expect(refused.stderr.contains("ENGAGE_UI_TOKEN"), "\(refused.stderr)")

            let token = "ui-token-7c1d;=+x"
            let (process, out, err, listening) = try await f.serve(["--host", "0.0.0.0"], environment: ["ENGAGE_UI_TOKEN": token])
            defer { if process.isRunning { process.terminate() } } // also when an expectation throws
            let url = listening.replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1")
            func get(_ path: String, _ headers: [(String, String)] = []) async throws -> HTTPAnswer {
                try await HTTP.get(url + path, headers: headers)
            }
            let anonymous = try await get("/")
            #expect(anonymous.status == 401 && anonymous.body.contains(#"<form method=post action="/login">"#))
            #expect(try await get("/definitions/x").status == 401)
            #expect(try await get("/destinations/vero").status == 401)
            #expect(try await get("/", [("Authorization", "Bearer wrong")]).status == 401)
            #expect(try await get("/", [("Authorization", "Bearer \(token)")]).status == 200)
            #expect(try await get("/healthz").status == 200, "probes need no token")

            func login(_ given: String) async throws -> (status: Int, cookie: String?) {
                try await signIn(url, given)
            }
            let wrong = try await login("guess")
            #expect(wrong.status == 401 && wrong.cookie == nil)
            let signedIn = try await login(token)
            #expect(signedIn.status == 303)
            let cookie = try #require(signedIn.cookie?.split(separator: ";").first.map(String.init))
            #expect(signedIn.cookie?.contains("HttpOnly") == true)
            #expect(try await get("/", [("Cookie", cookie)]).status == 200)
            #expect(try await get("/", [("Cookie", "engage_ui_token=guess")]).status == 401)

            kill(process.processIdentifier, SIGTERM)
            let result = await CLI.collect(process, out, err)
            #expect(result.status == 0)
            #expect(!result.stderr.contains(token) && !result.stdout.contains(token), "the token is never logged")
        }
    }

    @Test("the page's own defences: Host checked without a token, security headers, decoded names, a session cookie, /login limited, loopback parsed")
    func defences() async throws {
        #expect(EngageServer.isLoopback("127.0.0.1") && EngageServer.isLoopback("127.8.9.10") && EngageServer.isLoopback("::1")
                && EngageServer.isLoopback("[::1]") && EngageServer.isLoopback("localhost"))
        #expect(!EngageServer.isLoopback("127.evil.example") && !EngageServer.isLoopback("10.0.0.1") && !EngageServer.isLoopback("::2")
                && !EngageServer.isLoopback("0.0.0.0"))
        try await SyncFixture.with { f in
            _ = try await DestinationRepository(f.db).upsert(name: "vero eu", settings: DestinationSettings(
                baseURL: f.sandbox.baseURL, tokenEnv: SyncFixture.tokenVariable))
            // On loopback without a token: a page answers only to a Host naming this machine.
            let (process, out, err, url) = try await f.serve()
            defer { if process.isRunning { process.terminate() } }
            let port = try #require(url.split(separator: ":").last.map(String.init))
            func get(_ path: String, host: String? = nil) async throws -> HTTPAnswer {
                try await HTTP.get(url + path, headers: host.map { [("Host", $0)] } ?? [])
            }
            #expect(try await get("/", host: "attacker.example:\(port)").status == 421, "a DNS-rebound name is refused")
            #expect(try await get("/", host: "localhost:\(port)").status == 200)
            let page = try await get("/")
            #expect(page.status == 200)
            #expect(page.headers["Content-Security-Policy"].first?.contains("frame-ancestors 'none'") == true)
            #expect(page.headers["X-Content-Type-Options"].first == "nosniff" && page.headers["Referrer-Policy"].first == "no-referrer")
            #expect(try await get("/destinations/vero%20eu").status == 200, "names are percent-decoded")
            kill(process.processIdentifier, SIGTERM)
            _ = await CLI.collect(process, out, err)

            // With a token: the cookie is a session value, not the token; wrong tokens are limited.
            let token = "ui-token-\(UUID().uuidString)"
            let (secured, out2, err2, url2) = try await f.serve(environment: ["ENGAGE_UI_TOKEN": token])
            defer { if secured.isRunning { secured.terminate() } }
            func login(_ given: String) async throws -> (status: Int, cookie: String?) {
                try await signIn(url2, given)
            }
            let signedIn = try await login(token)
            #expect(signedIn.status == 303)
            #expect(signedIn.cookie.map { !$0.contains(token) && !$0.contains(token.replacingOccurrences(of: "-", with: "%2D")) } == true,
                    "\(signedIn.cookie ?? "-")")
            var statuses: [Int] = []
            for _ in 0..<(8) { statuses.append(try await login("guess").status) }
            #expect(statuses.prefix(5).allSatisfy { $0 == 401 } && statuses.suffix(3).allSatisfy { $0 == 429 }, "\(statuses)")
            #expect(try await login(token).status == 429, "the limit holds for a minute, whoever asks")
            kill(secured.processIdentifier, SIGTERM)
            _ = await CLI.collect(secured, out2, err2)
        }
    }

    @Test("emails are masked and user text is escaped")
    func masking() {
        let definition = DefinitionSummary(key: "k", name: "<b>K</b>", type: .audience, enabled: true, definitionJSON: "{}",
                                           sql: nil, syncEvery: "01:00:00", members: 1)
        let change = RecentChange(runID: 1, destination: "vero", userID: "alice@example.com", op: .enter, value: "true",
                                  status: .failed, reason: "HTTP 400: bob.smith@corp.example is not valid",
                                  createdAt: Date(timeIntervalSince1970: 1_796_018_400))
        let html = StatusPages.definition(definition, runs: [], changes: [change], failures: [])
        #expect(html.contains("a***@example.com") && html.contains("b***@corp.example"))
        #expect(!html.contains("alice@") && !html.contains("bob.smith@"))
        #expect(html.contains("&lt;b&gt;K&lt;/b&gt;") && !html.contains("<b>K</b>"))
    }
}
