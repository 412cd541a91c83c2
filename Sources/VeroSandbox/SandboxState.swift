import EngageCore
import Foundation
import NIOConcurrencyHelpers

/// Fault injection and checks for the sandbox (docs/operations.md#the-sandbox).
public struct SandboxConfiguration: Sendable {
    /// When set, requests must carry exactly this auth token (else 401); when nil, any
    /// non-empty token is accepted.
    public var token: String?
    /// The share of Vero requests answered with `failStatus` before doing anything (0...1).
    public var failRate: Double = 0
    public var failStatus: Int = 503
    /// Added to every Vero request, in milliseconds.
    public var latencyMilliseconds: Int = 0
    /// At most this many Vero requests a second; the rest get 429 with `Retry-After: 1`.
    public var rateLimit: Int?
    /// How many requests `/_sandbox/requests` remembers (the oldest are dropped).
    public var maxRecordedRequests: Int = 200_000
    /// A broken answer for every Vero request (see ``ResponseFault``); nil answers normally.
    public var responseFault: ResponseFault?

    /// Answers a misbehaving server gives.
    public enum ResponseFault: String, Sendable, CaseIterable {
        /// The request is applied; the 200 answer is 256 KiB long (4 times what a client reads).
        case huge
        /// The request is not applied; the answer is a 502 HTML page from a proxy.
        case notJSON = "not_json"
        /// The request is applied; the 200 answer stops half way and the connection closes.
        case truncated
        /// Another server at the base URL: a 200 HTML page ("Welcome to nginx!"); nothing applied.
        case notVero = "not_vero"
        /// A proxy's 502 HTML page holding a NUL byte; nothing applied.
        case nulInBody = "nul_in_body"
        /// A 400 that echoes the request body back, as sent and percent-encoded; nothing applied.
        case echo
        /// The request is applied; the 200's head comes at once, then Vero's answer one byte
        /// a second (about 35 s).
        case slowBody = "slow_body"
    }

    public init(token: String? = nil, failRate: Double = 0, failStatus: Int = 503, latencyMilliseconds: Int = 0,
                rateLimit: Int? = nil, maxRecordedRequests: Int = 200_000, responseFault: ResponseFault? = nil) {
        self.responseFault = responseFault
        self.token = token
        self.failRate = failRate
        self.failStatus = failStatus
        self.latencyMilliseconds = latencyMilliseconds
        self.rateLimit = rateLimit
        self.maxRecordedRequests = maxRecordedRequests
    }
}

/// A user as the sandbox holds it.
public struct SandboxUser: Sendable, Codable, Equatable {
    public var email: String?
    public var data: [String: JSONValue]
    public var tags: [String]
    public var subscribed: Bool
    public var events: Int

    public init(email: String? = nil, data: [String: JSONValue] = [:], tags: [String] = [], subscribed: Bool = true, events: Int = 0) {
        self.email = email
        self.data = data
        self.tags = tags
        self.subscribed = subscribed
        self.events = events
    }
}

/// One request the sandbox answered, without its auth token.
public struct SandboxRequest: Sendable, Codable {
    public var method: String
    public var path: String
    public var body: JSONValue
    public var status: Int
    /// Seconds since 1970, when the request arrived.
    public var at: Double
}

/// The sandbox's memory: users, the request log and the rate window. Thread-safe.
final class SandboxState: Sendable {
    private struct Memory {
        var users: [String: SandboxUser] = [:]
        var requests: [SandboxRequest] = []
        var dropped = 0
        var statusCounts: [Int: Int] = [:]
        var windowSecond = 0
        var windowCount = 0
        var current: SandboxConfiguration
        /// Where to post Vero-style email webhooks after each accepted identify, and the secret.
        var webhook: (url: String, secret: String)?
        var webhooksSent = 0
    }
    private let memory: NIOLockedValueBox<Memory>

    init(configuration: SandboxConfiguration) { memory = NIOLockedValueBox(Memory(current: configuration)) }

    /// The faults in force now (they can change at run time through `/_sandbox/faults`).
    var configuration: SandboxConfiguration { memory.withLockedValue { $0.current } }

    func setFaults(failRate: Double?, failStatus: Int?, latencyMilliseconds: Int?, rateLimit: Int??,
                   responseFault: SandboxConfiguration.ResponseFault?? = nil) {
        memory.withLockedValue { m in
            if let responseFault { m.current.responseFault = responseFault }
            if let failRate { m.current.failRate = failRate }
            if let failStatus { m.current.failStatus = failStatus }
            if let latencyMilliseconds { m.current.latencyMilliseconds = latencyMilliseconds }
            if let rateLimit { m.current.rateLimit = rateLimit }
        }
    }

    /// True when this request is over the rate limit for the current second.
    func overRateLimit() -> Bool {
        let second = Int(Date().timeIntervalSince1970)
        return memory.withLockedValue { m in
            guard let limit = m.current.rateLimit else { return false }
            if second != m.windowSecond {
                m.windowSecond = second
                m.windowCount = 0
            }
            m.windowCount += 1
            return m.windowCount > limit
        }
    }

    func record(method: String, path: String, body: JSONValue, status: Int) {
        var clean = body
        if case .object(var object) = body {
            object["auth_token"] = nil
            clean = .object(object)
        }
        let entry = SandboxRequest(method: method, path: path, body: clean, status: status, at: Date().timeIntervalSince1970)
        memory.withLockedValue { m in
            m.statusCounts[status, default: 0] += 1
            m.requests.append(entry)
            // Trim in steps of a tenth, not one by one: removing the first element of a long
            // array on every request made the sandbox itself the bottleneck past the limit.
            let limit = m.current.maxRecordedRequests
            if m.requests.count > limit + max(1, limit / 10) {
                let excess = m.requests.count - limit
                m.requests.removeFirst(excess)
                m.dropped += excess
            }
        }
    }

    func setWebhook(url: String, secret: String) { memory.withLockedValue { $0.webhook = (url, secret) } }

    var webhooksOn: Bool { memory.withLockedValue { $0.webhook != nil } }

    /// The webhook target, and a fresh sequence number for the next call's message id.
    func nextWebhook() -> (url: String, secret: String, sequence: Int)? {
        memory.withLockedValue { m in
            guard let webhook = m.webhook else { return nil }
            m.webhooksSent += 1
            return (webhook.url, webhook.secret, m.webhooksSent)
        }
    }

    func mutate<T>(_ body: (inout [String: SandboxUser]) -> T) -> T { memory.withLockedValue { body(&$0.users) } }

    func snapshotUsers() -> [String: SandboxUser] { memory.withLockedValue { $0.users } }

    func snapshotRequests() -> (requests: [SandboxRequest], dropped: Int, byStatus: [Int: Int]) {
        memory.withLockedValue { ($0.requests, $0.dropped, $0.statusCounts) }
    }

    func reset() {
        memory.withLockedValue { m in
            m.users = [:]
            m.requests = []
            m.dropped = 0
            m.statusCounts = [:]
        }
    }
}
