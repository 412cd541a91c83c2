import AsyncHTTPClient
import EngageCore
import Foundation
import NIOCore
import NIOHTTP1

/// How to reach one Vero destination. The token is held in memory only, read from the
/// environment variable the destination names; it never goes to a table, a log or an error.
public struct VeroEndpoint: Sendable {
    public var baseURL: String
    public var token: String
    public var requestTimeout: TimeAmount

    public init(baseURL: String, token: String, requestTimeout: TimeAmount = .seconds(30)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.requestTimeout = requestTimeout
    }
}

/// The outcome of one HTTP request.
public struct VeroResponse: Sendable {
    /// nil when no response arrived (connection refused, reset, timeout).
    public var status: Int?
    /// The first 1 KiB of the body, or the transport error.
    public var detail: String
    /// `Retry-After`, in seconds, when the server sent one.
    public var retryAfter: Double?

    public var classification: Classification { Classification.classify(status: status) }
}

/// Sends Vero requests over one shared `HTTPClient`.
public struct VeroTransport: Sendable {
    public let client: HTTPClient
    public let endpoint: VeroEndpoint

    public init(client: HTTPClient, endpoint: VeroEndpoint) {
        self.client = client
        self.endpoint = endpoint
    }

    /// An `HTTPClient` for the whole process: connect timeout 5 s, `connections` per host.
    public static func makeClient(connections: Int = 256, connectTimeout: TimeAmount = .seconds(5)) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: connectTimeout, read: .seconds(30))
        configuration.connectionPool = .init(idleTimeout: .seconds(60),
                                             concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, connections))
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The exact bytes sent: the request body plus `auth_token`.
    public func encodedBody(_ request: VeroRequest) -> [UInt8] {
        var body = request.body
        body["auth_token"] = .string(endpoint.token)
        return JSONValue.object(body).jsonBytes(sortedKeys: false)
    }

    /// Sends one request; never throws: failures come back as a response without a status.
    public func send(_ request: VeroRequest) async -> VeroResponse {
        var http = HTTPClientRequest(url: endpoint.baseURL + request.path)
        http.method = request.method == .POST ? .POST : .PUT
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: "application/json")
        http.headers.add(name: "User-Agent", value: "engage-sync")
        http.body = .bytes(ByteBuffer(bytes: encodedBody(request)))
        do {
            let response = try await client.execute(http, timeout: endpoint.requestTimeout)
            // Keep the first 1 KiB and drain the rest, however large the body.
            var kept = ByteBuffer()
            for try await var chunk in response.body {
                let room = 1_024 - kept.readableBytes
                if room > 0, let slice = chunk.readSlice(length: min(room, chunk.readableBytes)) {
                    var slice = slice
                    kept.writeBuffer(&slice)
                }
            }
            let text = String(decoding: kept.readableBytesView, as: UTF8.self)
            return VeroResponse(status: Int(response.status.code), detail: redact(text),
                                retryAfter: parseRetryAfter(response.headers.first(name: "Retry-After")))
        } catch {
            return VeroResponse(status: nil, detail: redact(describe(error)), retryAfter: nil)
        }
    }

    /// Removes the token from any text that might echo it back (a misbehaving server).
    func redact(_ text: String) -> String {
        // Searching the bytes first spares the usual case Foundation's (slow) replacing.
        guard Self.contains(Array(text.utf8), Array(endpoint.token.utf8)) else { return text }
        return text.replacingOccurrences(of: endpoint.token, with: "[redacted]")
    }

    /// A plain byte scan: the generic `firstRange(of:)` cost several percent of delivery CPU.
    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard let first = needle.first, haystack.count >= needle.count else { return false }
        var start = 0
        while start <= haystack.count - needle.count {
            if haystack[start] == first, haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
            start += 1
        }
        return false
    }

    private func describe(_ error: Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout: return "timeout after \(endpoint.requestTimeout.nanoseconds / 1_000_000_000) s"
            case .connectTimeout: return "connect timeout"
            case .remoteConnectionClosed: return "the server closed the connection"
            default: return "HTTP error: \(error)"
            }
        }
        return "network error: \(error)"
    }
}
