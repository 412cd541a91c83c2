import EngageCore
import Foundation
import AsyncHTTPClient
import Hummingbird
import Logging
import NIOCore

/// A local Vero-compatible Track API (docs/operations.md#the-sandbox): the endpoints the mapper uses, with Vero's
/// checks, users kept in memory, inspection endpoints and fault injection.
///
/// - `POST /api/v2/users/track`, `PUT /api/v2/users/edit`, `PUT /api/v2/users/tags/edit`,
///   `POST /api/v2/users/unsubscribe`, `POST /api/v2/users/resubscribe`,
///   `PUT /api/v2/users/reidentify`, `POST /api/v2/events/track`, `GET /api/v2/heartbeat`
/// - `GET /_sandbox/users`, `GET /_sandbox/requests`, `POST /_sandbox/reset`,
///   `POST /_sandbox/faults` (change fault injection while running), `POST /_sandbox/webhooks`
///   (`{"url": …, "secret": …}`: after each accepted identify, post Vero's `sent`, `delivered`
///   and `opened` webhooks for that user there, as Vero would once its emails go out)
public struct VeroSandbox: Sendable {
    let state: SandboxState

    public init(configuration: SandboxConfiguration = SandboxConfiguration()) {
        state = SandboxState(configuration: configuration)
    }

    /// Every request answered so far (for in-process tests that outlive a stopped server).
    public var recordedRequests: [SandboxRequest] { state.snapshotRequests().requests }

    /// A started sandbox: its port, and how to stop it.
    public struct Running: Sendable {
        public let port: Int
        let task: Task<Void, Error>
        public var baseURL: String { "http://127.0.0.1:\(port)" }

        /// Stops the server and waits until it has closed its socket.
        public func stop() async {
            task.cancel()
            _ = try? await task.value
        }
    }

    /// Starts serving on 127.0.0.1 (port 0: any free port) in a background task.
    public func start(port: Int = 0) async throws -> Running {
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        // Quiet: stopping an in-process sandbox logs a harmless "already closed".
        var logger = Logger(label: "vero-sandbox")
        logger.logLevel = .critical
        let app = makeApplication(port: port, logger: logger) { port in continuation.yield(port) }
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = stream.makeAsyncIterator()
        guard let bound = await iterator.next() else { throw CancellationError() }
        return Running(port: bound, task: task)
    }

    /// Serves until the process gets SIGINT or SIGTERM.
    public func run(host: String = "127.0.0.1", port: Int, onStarted: @escaping @Sendable (Int) -> Void) async throws {
        var logger = Logger(label: "vero-sandbox")
        logger.logLevel = .warning
        try await makeApplication(host: host, port: port, logger: logger, onStarted: onStarted).runService()
    }

    func makeApplication(host: String = "127.0.0.1", port: Int, logger: Logger,
                         onStarted: @escaping @Sendable (Int) -> Void) -> some ApplicationProtocol {
        let router = Router()
        let state = self.state
        let endpoints: [(HTTPRequest.Method, String)] = [
            (.post, "/api/v2/users/track"), (.put, "/api/v2/users/edit"), (.put, "/api/v2/users/tags/edit"),
            (.post, "/api/v2/users/unsubscribe"), (.post, "/api/v2/users/resubscribe"),
            (.put, "/api/v2/users/reidentify"), (.post, "/api/v2/events/track"),
        ]
        for (method, path) in endpoints {
            router.on(RouterPath(path), method: method) { request, _ in
                try await Self.handleVero(request, path: path, state: state)
            }
        }
        router.get("/api/v2/heartbeat") { _, _ in Self.json(200, #"{"status":200,"message":"OK"}"#) }
        router.get("/_sandbox/users") { _, _ in
            Self.json(200, Self.encode(state.snapshotUsers()))
        }
        router.get("/_sandbox/requests") { request, _ in
            let (requests, dropped, byStatus) = state.snapshotRequests()
            let pathFilter = request.uri.queryParameters.get("path")
            let kept = pathFilter.map { p in requests.filter { $0.path == p } } ?? requests
            struct Listing: Encodable { var total: Int; var dropped: Int; var by_status: [String: Int]; var requests: [SandboxRequest] }
            let listing = Listing(total: byStatus.values.reduce(0, +), dropped: dropped,
                                  by_status: Dictionary(uniqueKeysWithValues: byStatus.map { (String($0), $1) }),
                                  requests: kept)
            return Self.json(200, Self.encode(listing))
        }
        // Change faults while running: {"fail_rate": 0.5, "fail_status": 503, "latency_ms": 2000, "rate_limit": null,
        // "response": "huge" | "not_json" | "truncated" | null}
        router.post("/_sandbox/faults") { request, _ in
            let bytes = try await request.body.collect(upTo: 1 << 16)
            guard let body = try? JSONValue.parse(Data(bytes.readableBytesView)).objectValue else {
                return Self.json(400, #"{"status":400,"message":"a JSON object is required"}"#)
            }
            let rateLimit: Int?? = body["rate_limit"].map { $0.numberValue.map { Int($0) } }
            let response: SandboxConfiguration.ResponseFault?? = body["response"].map {
                $0.stringValue.flatMap(SandboxConfiguration.ResponseFault.init(rawValue:))
            }
            state.setFaults(failRate: body["fail_rate"]?.numberValue, failStatus: body["fail_status"]?.numberValue.map { Int($0) },
                            latencyMilliseconds: body["latency_ms"]?.numberValue.map { Int($0) }, rateLimit: rateLimit,
                            responseFault: response)
            return Self.json(200, #"{"status":200,"message":"faults updated"}"#)
        }
        router.post("/_sandbox/webhooks") { request, _ in
            let bytes = try await request.body.collect(upTo: 1 << 16)
            guard let body = try? JSONValue.parse(Data(bytes.readableBytesView)), let url = body["url"]?.stringValue,
                  let secret = body["secret"]?.stringValue else {
                return Self.json(400, #"{"status":400,"message":"{\"url\": …, \"secret\": …} is required"}"#)
            }
            state.setWebhook(url: url, secret: secret)
            return Self.json(200, #"{"status":200,"message":"webhooks on"}"#)
        }
        router.post("/_sandbox/reset") { _, _ in
            state.reset()
            return Self.json(200, #"{"status":200,"message":"reset"}"#)
        }
        return Application(router: router,
                           configuration: .init(address: .hostname(host, port: port), serverName: nil),
                           onServerRunning: { channel in onStarted(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    // MARK: - Vero endpoints

    static func handleVero(_ request: Request, path: String, state: SandboxState) async throws -> Response {
        let configuration = state.configuration
        if configuration.latencyMilliseconds > 0 {
            try await Task.sleep(for: .milliseconds(configuration.latencyMilliseconds))
        }
        let bytes = try await request.body.collect(upTo: 4 << 20)
        let body = (try? JSONValue.parse(Data(bytes.readableBytesView))) ?? .null
        let method = request.method.rawValue
        func answer(_ status: Int, _ message: String, headers: HTTPFields = [:]) -> Response {
            state.record(method: method, path: path, body: body, status: status)
            let text = JSONValue.object(["status": .int(status), "message": .string(message)]).jsonString
            return json(status, text, headers: headers)
        }
        if state.overRateLimit() {
            return answer(429, "Too Many Requests", headers: [.retryAfter: "1"])
        }
        if configuration.failRate > 0, Double.random(in: 0..<1) < configuration.failRate {
            return answer(configuration.failStatus, "injected failure")
        }
        func page(_ status: HTTPResponse.Status, _ text: String, type: String = "text/html") -> Response {
            state.record(method: method, path: path, body: body, status: status.code)
            return Response(status: status, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        switch configuration.responseFault {
        case .notJSON?:
            return page(.badGateway, "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>")
        case .notVero?:
            return page(.ok, "<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>")
        case .nulInBody?:
            return page(.badGateway, "<html><body>502 Bad Gateway\u{0}</body></html>")
        case .echo?:
            let sent = String(decoding: bytes.readableBytesView, as: UTF8.self)
            return page(.badRequest, "you sent: \(sent)\nencoded: \(sent.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")",
                        type: "text/plain")
        default:
            break
        }
        guard case .object(let object) = body else { return answer(400, "Bad Request: the body must be a JSON object") }
        let token = object["auth_token"]?.stringValue ?? request.uri.queryParameters.get("auth_token").map { String($0) }
        guard let token, !token.isEmpty, configuration.token == nil || configuration.token == token else {
            return answer(401, "Unauthorized")
        }
        switch apply(path: path, object, state: state) {
        case nil:
            switch configuration.responseFault {
            case .huge?:
                // Vero's answer, then 256 KiB of whitespace: valid JSON however far it is read.
                state.record(method: method, path: path, body: body, status: 200)
                let chunk = ByteBuffer(repeating: UInt8(ascii: " "), count: 64 << 10)
                return Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init(contentsOf: [ByteBuffer(string: #"{"status":200,"message":"Success."}"#)]
                                            + Array(repeating: chunk, count: 4)))
            case .truncated?:
                state.record(method: method, path: path, body: body, status: 200)
                return Response(status: .ok, headers: [.contentType: "application/json", .contentLength: "100"],
                                body: .init(contentLength: 100) { writer in
                                    try await writer.write(ByteBuffer(string: #"{"status":200,"mess"#))
                                    throw CancellationError() // the server drops the connection mid-body
                                })
            case .slowBody?:
                state.record(method: method, path: path, body: body, status: 200)
                let answer = Array(#"{"status":200,"message":"Success."}"#.utf8)
                return Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init { writer in
                                    for byte in answer {
                                        try await Task.sleep(for: .seconds(1))
                                        try await writer.write(ByteBuffer(bytes: [byte]))
                                    }
                                    try await writer.finish(nil)
                                })
            case .notJSON?, .notVero?, .nulInBody?, .echo?, nil: // (the first four answered above)
                if path == "/api/v2/users/track" { emitWebhooks(for: object, state: state) }
                return answer(200, "Success.")
            }
        case let reason?: return answer(400, "Bad Request: \(reason)")
        }
    }

    /// Posts `sent`, `delivered` and `opened` for the user of an accepted identify to the
    /// configured webhook target, in the background (as Vero does, after the fact).
    static func emitWebhooks(for identify: [String: JSONValue], state: SandboxState) {
        guard let user = identify["id"] ?? identify["email"], state.webhooksOn else { return }
        let email = identify["email"] ?? .null
        Task {
            var at = Int(Date().timeIntervalSince1970)
            for type in ["sent", "delivered", "opened"] {
                guard let target = state.nextWebhook() else { return }
                let payload: JSONValue = ["type": .string(type), "user": ["id": user, "email": email],
                                          "campaign": ["id": 1, "name": "Sandbox campaign", "subject": "Hello from the sandbox"],
                                          "message_id": .string("sandbox-\(target.sequence)"), .init(stringLiteral: "\(type)_at"): .int(at)]
                var request = HTTPClientRequest(url: target.url)
                request.method = .POST
                request.headers.add(name: "Authorization", value: "Bearer \(target.secret)")
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: payload.jsonString))
                _ = try? await HTTPClient.shared.execute(request, timeout: .seconds(10))
                at += 1
            }
        }
    }

    /// Checks a request as Vero does and applies it; returns why it is a 400, or nil.
    static func apply(path: String, _ body: [String: JSONValue], state: SandboxState) -> String? {
        func id(_ key: String, in object: [String: JSONValue]) -> String? {
            switch object[key] {
            case .string(let s)? where !s.isEmpty: return s
            case .int(let i)?: return String(i)
            default: return nil
            }
        }
        func validEmail(_ value: JSONValue?) -> Bool {
            guard let value else { return true }
            guard let email = value.stringValue else { return false }
            return VeroMapper.isEmail(email) && email.count < 255
        }
        switch path {
        case "/api/v2/users/track":
            guard let userID = id("id", in: body) else { return "id is required" }
            guard validEmail(body["email"]) else { return "email is malformed" }
            let data = body["data"]?.objectValue ?? [:]
            state.mutate { users in
                var user = users[userID] ?? SandboxUser()
                if let email = body["email"]?.stringValue { user.email = email }
                user.data.merge(data) { _, new in new }
                users[userID] = user
            }
        case "/api/v2/users/edit":
            guard let userID = id("id", in: body) else { return "id is required" }
            guard let changes = body["changes"]?.objectValue else { return "changes is required" }
            state.mutate { users in
                var user = users[userID] ?? SandboxUser()
                user.data.merge(changes) { _, new in new }
                users[userID] = user
            }
        case "/api/v2/users/tags/edit":
            guard let userID = id("id", in: body) else { return "id is required" }
            let add = body["add"]?.arrayValue?.compactMap(\.stringValue)
            let remove = body["remove"]?.arrayValue?.compactMap(\.stringValue)
            guard add != nil || remove != nil else { return "add or remove is required" }
            state.mutate { users in
                var user = users[userID] ?? SandboxUser()
                var tags = Set(user.tags)
                tags.formUnion(add ?? [])
                tags.subtract(remove ?? [])
                user.tags = tags.sorted()
                users[userID] = user
            }
        case "/api/v2/users/unsubscribe", "/api/v2/users/resubscribe":
            guard let userID = id("id", in: body) else { return "id is required" }
            state.mutate { users in
                var user = users[userID] ?? SandboxUser()
                user.subscribed = path.hasSuffix("resubscribe")
                users[userID] = user
            }
        case "/api/v2/users/reidentify":
            guard let oldID = id("id", in: body) else { return "id is required" }
            guard let newID = id("new_id", in: body) else { return "new_id is required" }
            state.mutate { users in
                if let user = users.removeValue(forKey: oldID) { users[newID] = user }
            }
        case "/api/v2/events/track":
            guard let identity = body["identity"]?.objectValue else { return "identity is required" }
            let userID = id("id", in: identity) ?? identity["email"]?.stringValue
            guard let userID else { return "identity.id or identity.email is required" }
            guard validEmail(identity["email"]) else { return "identity.email is malformed" }
            guard let name = body["event_name"]?.stringValue, !name.isEmpty else { return "event_name is required" }
            state.mutate { users in
                var user = users[userID] ?? SandboxUser()
                user.events += 1
                if let email = identity["email"]?.stringValue { user.email = email }
                users[userID] = user
            }
        default:
            return "unknown endpoint"
        }
        return nil
    }

    // MARK: - Helpers

    static func json(_ status: Int, _ text: String, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "null"
    }
}
