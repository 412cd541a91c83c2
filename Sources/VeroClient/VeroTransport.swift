import AsyncHTTPClient
import EngageCore
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// How to reach one Vero destination. The token is held in memory only, read from the
/// environment variable the destination names; it never goes to a table, a log or an error.
public struct VeroEndpoint: Sendable {
    public var baseURL: String
    public var token: Secret
    public var requestTimeout: TimeAmount

    /// The forms the token can take in text a server echoes back: raw, JSON-escaped (with and
    /// without `\u` escapes of non-ASCII), percent-encoded (upper- and lower-case hex, `+` for
    /// a space), longest first.
    let tokenForms: [String]

    public init(baseURL: String, token: Secret, requestTimeout: TimeAmount = .seconds(30)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.requestTimeout = requestTimeout
        tokenForms = Self.forms(of: token.revealed)
    }

    static func forms(of token: String) -> [String] {
        guard !token.isEmpty else { return [] }
        let json = String(JSONValue.string(token).jsonString.dropFirst().dropLast())
        let asciiJSON = json.unicodeScalars.map { $0.isASCII ? String($0) : $0.utf16Escaped }.joined()
        let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        // Encoders differ on which punctuation they leave alone: RFC 3986's unreserved set, or
        // letters and digits only.
        var percentForms: [String] = []
        for allowed in [unreserved, CharacterSet.alphanumerics] {
            let percent = token.addingPercentEncoding(withAllowedCharacters: allowed) ?? token
            percentForms += [percent, percent.replacing(/%[0-9A-F]{2}/) { $0.output.lowercased() },
                             percent.replacingOccurrences(of: "%20", with: "+")]
        }
        let upperJSON = asciiJSON.replacing(/\\u[0-9a-f]{4}/) { "\\u" + $0.output.dropFirst(2).uppercased() }
        return Array(Set([token, json, asciiJSON, upperJSON] + percentForms)).sorted { $0.utf8.count > $1.utf8.count }
    }
}

/// The outcome of one HTTP request.
public struct VeroResponse: Sendable {
    /// nil when no response arrived (connection refused, reset, timeout).
    public var status: Int?
    /// The first 1 KiB of the body (token redacted, NUL replaced), or the transport error.
    public var detail: String
    /// `Retry-After`, in seconds, when the server sent one.
    public var retryAfter: Double?
    /// A 2xx whose body is not Vero's JSON answer (another server at the base URL, a proxy's
    /// page): not a confirmation, so retried like a 5xx and never counted as delivered.
    public var notVero = false

    public var classification: Classification { notVero ? .retryable : Classification.classify(status: status) }
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
        body["auth_token"] = .string(endpoint.token.revealed)
        return JSONValue.object(body).jsonBytes(sortedKeys: false)
    }

    /// Sends one request; never throws: failures come back as a response without a status.
    ///
    /// The request timeout bounds the whole exchange: connecting, the answer's head and all of
    /// its body (a body that trickles in is cut at the deadline, unconfirmed). `cutOff`, when
    /// given, is asked every `checkEvery` while the request is in flight; a reason it returns
    /// ends the request at once (the caller's lease on the row is running out).
    public func send(_ request: VeroRequest, checkEvery: Duration = .seconds(1),
                     cutOff: (@Sendable () -> String?)? = nil) async -> VeroResponse {
        var http = HTTPClientRequest(url: endpoint.baseURL + request.path)
        http.method = request.method == .POST ? .POST : .PUT
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: "application/json")
        http.headers.add(name: "User-Agent", value: "engage-sync")
        http.body = .bytes(ByteBuffer(bytes: encodedBody(request)))
        let prepared = http, timeout = endpoint.requestTimeout
        // The exchange runs in a task of its own; an event-loop timer (cheaper than a second
        // task: no thread hop when the answer comes) checks the deadline and `cutOff`, and
        // cancels the exchange (closing its connection) when either says so. The deadline runs
        // from the moment the exchange starts (a busy machine may start it late).
        let deadline = NIOLockedValueBox<NIODeadline?>(nil)
        let exchange = Task {
            let due = NIODeadline.now() + timeout
            deadline.withLockedValue { $0 = due }
            return await self.exchange(prepared, deadline: due)
        }
        let cut = NIOLockedValueBox<String?>(nil)
        let check = min(TimeAmount(checkEvery), timeout)
        let watch = client.eventLoopGroup.any().scheduleRepeatedTask(initialDelay: check, delay: check) { task in
            // (A timer may fire a hair early: within 5 ms of the deadline counts as reached.)
            let late = deadline.withLockedValue { $0 }.map { NIODeadline.now() + .milliseconds(5) >= $0 } ?? false
            let reason = late ? Self.timeoutDetail(timeout) : cutOff?().map { "cut off: \($0)" }
            guard let reason else { return }
            cut.withLockedValue { $0 = $0 ?? reason }
            exchange.cancel()
            task.cancel()
        }
        let answer = await withTaskCancellationHandler { await exchange.value } onCancel: { exchange.cancel() }
        watch.cancel()
        if let reason = cut.withLockedValue({ $0 }) { return VeroResponse(status: nil, detail: reason, retryAfter: nil) }
        return answer
    }

    /// One request's exchange, the whole body read.
    private func exchange(_ http: HTTPClientRequest, deadline: NIODeadline) async -> VeroResponse {
        do {
            let response = try await client.execute(http, deadline: deadline)
            // Keep the first 64 KiB (Vero's answers are a few dozen bytes) and drain the rest,
            // however large the body, noting whether anything but whitespace follows.
            var kept = ByteBuffer()
            var moreThanWhitespace = false
            for try await var chunk in response.body {
                let room = Self.keptBytes - kept.readableBytes
                if room > 0, let slice = chunk.readSlice(length: min(room, chunk.readableBytes)) {
                    var slice = slice
                    kept.writeBuffer(&slice)
                }
                if !moreThanWhitespace, chunk.readableBytes > 0 {
                    moreThanWhitespace = chunk.withUnsafeReadableBytes { !Self.isAllWhitespace($0) }
                }
            }
            let status = Int(response.status.code)
            let bytes = Array(kept.readableBytesView)
            var answer = VeroResponse(status: status, detail: Self.recordable(redact(String(decoding: bytes, as: UTF8.self))),
                                      retryAfter: parseRetryAfter(response.headers.first(name: "Retry-After")))
            if (200..<300).contains(status), moreThanWhitespace || !Self.isVeroSuccess(bytes) {
                answer.notVero = true
                answer.detail = "not Vero's answer, is the destination's base URL Vero's API? (the body began: \(answer.detail.prefix(200)))"
            }
            return answer
        } catch {
            return VeroResponse(status: nil, detail: redact(describe(error)), retryAfter: nil)
        }
    }

    static func timeoutDetail(_ timeout: TimeAmount) -> String { "timeout after \(timeout.nanoseconds / 1_000_000_000) s" }

    /// How much of an answer is kept: parsed to recognise Vero's, and its first KiB recorded.
    static let keptBytes = 64 << 10

    static func isJSONWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

    /// Whether `bytes` are all JSON whitespace: eight spaces at a time (a padded answer is mostly
    /// spaces), the rest byte by byte. A plain loop: megabytes are scanned, in debug builds too.
    static func isAllWhitespace(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let spaces: UInt64 = 0x2020_2020_2020_2020
        var i = 0
        while i < bytes.count {
            if i + 8 <= bytes.count, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) == spaces {
                i += 8
                continue
            }
            if !isJSONWhitespace(bytes[i]) { return false }
            i += 1
        }
        return true
    }

    /// Vero's answer to an accepted request: a JSON object whose `status` is a 2xx
    /// (`{"status":200,"message":"Success."}`).
    static func isVeroSuccess(_ body: [UInt8]) -> Bool {
        guard let json = try? JSONValue.parse(Data(body)), case .int(let status)? = json["status"] else { return false }
        return (200..<300).contains(status)
    }

    /// What may be stored of an answer: its first KiB, with NUL (which PostgreSQL's text cannot
    /// hold) replaced; invalid UTF-8 was replaced when it was decoded.
    static func recordable(_ text: String) -> String {
        var text = text
        if text.utf8.count > 1_024 { text = String(decoding: text.utf8.prefix(1_024), as: UTF8.self) }
        return text.contains("\u{0}") ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
    }

    /// Removes the token from any text that might echo it back (a misbehaving server), in
    /// each form an echo can take: raw, JSON-escaped and percent-encoded.
    func redact(_ text: String) -> String {
        var text = text
        // Searching the bytes first spares the usual case Foundation's (slow) replacing.
        let bytes = Array(text.utf8)
        for form in endpoint.tokenForms where Self.contains(bytes, Array(form.utf8)) {
            text = text.replacingOccurrences(of: form, with: "[redacted]")
        }
        return text
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
            case .deadlineExceeded, .readTimeout: return Self.timeoutDetail(endpoint.requestTimeout)
            case .connectTimeout: return "connect timeout"
            case .remoteConnectionClosed: return "the server closed the connection"
            default: return "HTTP error: \(error)"
            }
        }
        return "network error: \(error)"
    }
}

private extension Unicode.Scalar {
    /// `\u00fc`, or a surrogate pair for scalars beyond the BMP, as JSON escapes them.
    var utf16Escaped: String {
        String(self).utf16.map { String(format: "\\u%04x", $0) }.joined()
    }
}
