import AsyncHTTPClient
import EngageCore
import EngageStore
import EngageSync
import Foundation
import PostgresClient
import Testing
import VeroSandbox

/// A test database with a sandbox and a destination pointing at it.
public struct SyncFixture: Sendable {
    public let db: PostgresConnection
    public let url: String
    public let sandbox: VeroSandbox.Running
    public let destination: Destination
    /// The environment variable the destination reads its token from, set in this process.
    public static let tokenVariable = "ENGAGE_SYNC_TEST_TOKEN"
    public static let token = "test-token-5f2c1e9a"

    public init(db: PostgresConnection, url: String, sandbox: VeroSandbox.Running, destination: Destination) {
        self.db = db
        self.url = url
        self.sandbox = sandbox
        self.destination = destination
    }

    public static func with<T: Sendable>(sandbox configuration: SandboxConfiguration = SandboxConfiguration(),
                                  concurrency: Int = 16, rate: Double = 10_000, maxAttempts: Int = 10,
                                  server: String? = nil,
                                  _ body: (SyncFixture) async throws -> T) async throws -> T {
        setenv(tokenVariable, token, 1)
        let running = try await VeroSandbox(configuration: configuration).start()
        do {
            let result = try await TestDatabase.with(server: server) { db, url in
                let destination = try await DestinationRepository(db).upsert(name: "vero", settings: DestinationSettings(
                    baseURL: running.baseURL, tokenEnv: tokenVariable, rate: rate, concurrency: concurrency, maxAttempts: maxAttempts))
                return try await body(SyncFixture(db: db, url: url, sandbox: running, destination: destination))
            }
            await running.stop()
            return result
        } catch {
            await running.stop()
            throw error
        }
    }

    /// `count` identified profiles p1…pN (user ids u1…uN) and an audience `test_aud` whose
    /// outbox holds one pending identify (`test_aud: true`) per profile.
    @discardableResult
    public func seedOutbox(count: Int, badEmailFor: Set<Int> = []) async throws -> Int {
        try await db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, \(count)) i
            """)
        let computation = try await db.query("""
            INSERT INTO engage.computations (key, name, type, definition)
            VALUES ('test_aud', 'Test', 'audience', '{"name": "Test", "key": "test_aud", "type": "audience", "condition": {"event": "E"}}')
            RETURNING id
            """).first?.decode(Int.self, "id") ?? 0
        try await db.query("""
            INSERT INTO engage.outbox (destination_id, computation_id, profile_id, op, value, message)
            SELECT \(destination.id), \(computation), 'p' || i, 'enter', 'true',
                   jsonb_build_object('type', 'identify', 'userId', 'u' || i, 'messageId', 'm' || i,
                       'traits', jsonb_build_object('test_aud', true,
                           'email', CASE WHEN i = ANY(\(badEmailFor.map(String.init))::int[]) THEN 'not-an-email' ELSE 'u' || i || '@example.com' END))
            FROM generate_series(1, \(count)) i
            """)
        return computation
    }

    /// 100 profiles p1…p100 (user ids u1…u100), the even ones on the `pro` plan and the odd
    /// ones on `free`, and a table `app.vips` naming u1…u40 for a SQL audience to read.
    public func seedPlansAndVIPs() async throws {
        try await db.execute("""
            CREATE SCHEMA app;
            CREATE TABLE app.vips AS SELECT 'u' || i AS id FROM generate_series(1, 40) i;
            INSERT INTO engage.profiles (profile_id, user_id, email, traits)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com', jsonb_build_object('plan', CASE WHEN i % 2 = 0 THEN 'pro' ELSE 'free' END)
            FROM generate_series(1, 100) i;
            """)
    }

    /// Runs the executable against this database, with the destination's token set.
    public func cli(_ arguments: [String], environment: [String: String] = [:]) async throws -> CLIRun {
        try await CLI.run(arguments + ["--database-url", url],
                          environment: environment.merging([Self.tokenVariable: Self.token]) { mine, _ in mine })
    }

    /// Starts `serve` on a free port (ticking every half second) with the destination's token
    /// set; returns the process, its pipes and its base URL.
    public func serve(_ extra: [String] = [], environment: [String: String] = [:]) async throws -> (Process, Pipe, Pipe, String) {
        let (process, out, err) = try CLI.start(["serve", "--port", "0", "--tick", "0.5", "--database-url", url] + extra,
                                                environment: environment.merging([Self.tokenVariable: Self.token]) { a, _ in a })
        // Its first line names the port; read it off the cooperative pool.
        let first = await CLI.offPool { String(decoding: out.fileHandleForReading.availableData, as: UTF8.self) }
        let url = try #require(first.firstRange(of: #/http://[0-9.]+:[0-9]+/#).map { String(first[$0]) }, "serve said: \(first)")
        return (process, out, err, url)
    }

    /// Polls until `sql` (a count named `c`) returns at least `atLeast` (a bounded wait).
    public func waitFor(_ sql: PostgresQuery, atLeast: Int, seconds: Double = 300) async throws {
        try await eventually(seconds: seconds, every: .milliseconds(50), "\(sql) >= \(atLeast)") { try await count(sql) >= atLeast }
    }

    /// `engage-sync define` of one JSON document; expects success.
    public func define(_ json: String) async throws {
        let path = try temporaryFile(json, suffix: ".json")
        let run = try await cli(["define", path])
        #expect(run.status == 0, "\(run.stderr)")
    }

    public func deliver(_ options: DeliveryOptions = DeliveryOptions(maxWaitSeconds: 0)) async throws -> DeliveryReport {
        let pool = PostgresConnectionPool(conninfo: url, maxConnections: 2)
        do {
            let report = try await Deliverer(destination: destination, pool: pool, client: HTTPClient.shared, options: options).run()
            await pool.close()
            return report
        } catch {
            await pool.close()
            throw error
        }
    }

    public func count(_ sql: PostgresQuery) async throws -> Int {
        try await db.query(sql).first?.decode(Int.self, "c") ?? -1
    }

    /// The kept figures `status` and `metrics` read that differ from a full count of the outbox,
    /// the ledger and the snapshot (`engage.figure_drift`), as "pair 1/2 pending: kept k,
    /// counted n". Empty when they agree.
    public func figureDrift() async throws -> [String] {
        try await db.query("SELECT scope, figure, kept, counted FROM engage.figure_drift").map { r in
            "\(r["scope"] ?? "") \(r["figure"] ?? ""): kept \(r["kept"] ?? ""), counted \(r["counted"] ?? "")"
        }
    }

    // MARK: - The sandbox's view

    /// The Vero ids whose value for `key` differs from what it should be: for an id some
    /// profile has as its user id, that profile's snapshot value (nothing when it is not in
    /// the snapshot and was never told, `exit` once told); for an id no profile has, `exit`
    /// (or nothing, if it was never told). Also the ledger rows that differ from the sandbox.
    public func wrongHolders(key: String, exit: JSONValue) async throws -> (sandbox: [String], ledger: [String]) {
        let owners = try await db.query("""
            SELECT p.user_id, m.value::text AS value FROM engage.profiles p
            LEFT JOIN engage.memberships m ON m.profile_id = p.profile_id
                 AND m.computation_id = (SELECT id FROM engage.computations WHERE key = \(key))
            WHERE p.user_id IS NOT NULL
            """)
        var snapshot: [String: JSONValue?] = [:]
        for row in owners {
            snapshot[try row.decode(String.self, "user_id")] = try row.decode(String?.self, "value").map { try JSONValue.parse($0) }
        }
        let users = try await sandboxUsers()
        var wrong: [String] = []
        for (id, user) in users {
            guard let held = user.data[key] else { continue }
            let expected = snapshot[id].flatMap { $0 } ?? exit
            if held != expected { wrong.append("\(id) holds \(held.jsonString), should hold \(expected.jsonString)") }
        }
        for (id, value) in snapshot {
            if let value, users[id]?.data[key] == nil { wrong.append("\(id) holds nothing, should hold \(value.jsonString)") }
        }
        let ledger = try await db.query("""
            SELECT l.vero_id, l.value::text AS value FROM engage.ledger l
            JOIN engage.computations c ON c.id = l.computation_id WHERE c.key = \(key)
            """)
        var ledgerWrong: [String] = []
        for row in ledger {
            let id = try row.decode(String.self, "vero_id"), value = try JSONValue.parse(try row.decode(String.self, "value"))
            if users[id]?.data[key] != value { ledgerWrong.append("ledger says \(id) holds \(value.jsonString)") }
        }
        return (wrong.sorted(), ledgerWrong.sorted())
    }

    public func sandboxUsers() async throws -> [String: SandboxUser] {
        try await get("/_sandbox/users", as: [String: SandboxUser].self)
    }

    public struct Listing: Decodable {
        public var total: Int
        public var requests: [SandboxRequest]
    }

    public func sandboxRequests() async throws -> Listing { try await get("/_sandbox/requests", as: Listing.self) }

    /// Changes the sandbox's faults while it runs (`POST /_sandbox/faults`).
    public func setFaults(_ json: String) async throws {
        let answer = try await HTTP.post(sandbox.baseURL + "/_sandbox/faults", json)
        #expect(answer.status == 200, "\(answer.body)")
    }

    private func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try await HTTP.decode(sandbox.baseURL + path, as: T.self)
    }
}

extension SandboxRequest {
    /// The Vero user id a request is about.
    public var userID: String? { body["id"]?.stringValue ?? body["identity"]?["id"]?.stringValue }
}

