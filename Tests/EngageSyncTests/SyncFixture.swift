import AsyncHTTPClient
import EngageCore
import EngageStore
import EngageSync
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// A test database with a sandbox and a destination pointing at it.
struct SyncFixture {
    let db: PostgresConnection
    let url: String
    let sandbox: VeroSandbox.Running
    let destination: Destination
    /// The environment variable the destination reads its token from, set in this process.
    static let tokenVariable = "ENGAGE_SYNC_TEST_TOKEN"
    static let token = "test-token-5f2c1e9a"

    static func with<T: Sendable>(sandbox configuration: SandboxConfiguration = SandboxConfiguration(),
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
    func seedOutbox(count: Int, badEmailFor: Set<Int> = []) async throws -> Int {
        try await db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email)
            SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, $1) i
            """, [count])
        let computation = try await db.query("""
            INSERT INTO engage.computations (key, name, type, definition)
            VALUES ('test_aud', 'Test', 'audience', '{"name": "Test", "key": "test_aud", "type": "audience", "condition": {"event": "E"}}')
            RETURNING id
            """).first?.decode(Int.self, "id") ?? 0
        try await db.query("""
            INSERT INTO engage.outbox (destination_id, computation_id, profile_id, op, value, message)
            SELECT $1, $2, 'p' || i, 'enter', 'true',
                   jsonb_build_object('type', 'identify', 'userId', 'u' || i, 'messageId', 'm' || i,
                       'traits', jsonb_build_object('test_aud', true,
                           'email', CASE WHEN i = ANY($4::int[]) THEN 'not-an-email' ELSE 'u' || i || '@example.com' END))
            FROM generate_series(1, $3) i
            """, [destination.id, computation, count, "{\(badEmailFor.map(String.init).joined(separator: ","))}"])
        return computation
    }

    func deliver(_ options: DeliveryOptions = DeliveryOptions(maxWaitSeconds: 0)) async throws -> DeliveryReport {
        try await Deliverer(destination: destination, databaseURL: url, client: HTTPClient.shared, options: options).run()
    }

    func count(_ sql: String) async throws -> Int {
        try await db.query(sql).first?.decode(Int.self, "c") ?? -1
    }

    // MARK: - The sandbox's view

    func sandboxUsers() async throws -> [String: SandboxUser] {
        try await get("/_sandbox/users", as: [String: SandboxUser].self)
    }

    struct Listing: Decodable {
        var total: Int
        var requests: [SandboxRequest]
    }

    func sandboxRequests() async throws -> Listing { try await get("/_sandbox/requests", as: Listing.self) }

    /// Changes the sandbox's faults while it runs (`POST /_sandbox/faults`).
    func setFaults(_ json: String) async throws {
        var request = HTTPClientRequest(url: sandbox.baseURL + "/_sandbox/faults")
        request.method = .POST
        request.body = .bytes(.init(string: json))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        #expect(response.status == .ok)
    }

    private func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: sandbox.baseURL + path), timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 512 << 20)
        return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
    }
}

extension SandboxRequest {
    /// The Vero user id a request is about.
    var userID: String? { body["id"]?.stringValue ?? body["identity"]?["id"]?.stringValue }
}
