import AsyncHTTPClient
import Foundation
import NIOHTTP1

/// What an HTTP exchange gave back: the status, the headers and the body as text.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: String
}

/// The tests' one way to speak HTTP to `serve`, the sandbox or anything else they start.
public enum HTTP {
    /// A client that shows a redirect instead of following it (a sign-in's 303 and its cookie).
    private static let noRedirects = HTTPClient(configuration: .init(redirectConfiguration: .disallow))

    /// `GET url`.
    public static func get(_ url: String, headers: [(String, String)] = [], followRedirects: Bool = true) async throws -> HTTPAnswer {
        try await send(url, method: .GET, body: nil, headers: headers, followRedirects: followRedirects)
    }

    /// `POST url` (or `method`) with `body`.
    public static func post(_ url: String, _ body: String, method: HTTPMethod = .POST, headers: [(String, String)] = [],
                            followRedirects: Bool = true) async throws -> HTTPAnswer {
        try await send(url, method: method, body: body, headers: headers, followRedirects: followRedirects)
    }

    /// `GET url`, its JSON body decoded.
    public static func decode<T: Decodable>(_ url: String, as type: T.Type) async throws -> T {
        try JSONDecoder().decode(T.self, from: Data(try await get(url).body.utf8))
    }

    /// A "Host" header given in `headers` replaces the one the URL implies. The timeout is long:
    /// under the full suite a loaded machine can take seconds to answer.
    private static func send(_ url: String, method: HTTPMethod, body: String?, headers: [(String, String)],
                             followRedirects: Bool) async throws -> HTTPAnswer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body { request.body = .bytes(.init(string: body)) }
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        let client = followRedirects ? HTTPClient.shared : noRedirects
        let response = try await client.execute(request, timeout: .seconds(30))
        let text = String(buffer: try await response.body.collect(upTo: 512 << 20))
        return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: text)
    }
}
