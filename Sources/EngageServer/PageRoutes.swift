import EngageCore
import EngageStore
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import PostgresClient
import StatusPage

extension EngageServer {
    /// The status page's routes: `GET /`, `/definitions/KEY`, `/destinations/NAME`, `/profiles?q=`,
    /// `/profiles/ID` and `/profiles/ID/explain/KEY`, read-only,
    /// from the store's reads. With a `token` (`ENGAGE_UI_TOKEN`) each asks for it as a bearer
    /// token or the session cookie `POST /login` sets (a random value of this process, not the
    /// token); without one (a loopback address) none does, but a request must name the bound
    /// host or a loopback name in its `Host`, so a page elsewhere that rebinds its DNS name to
    /// 127.0.0.1 cannot read it. `/login` takes ``LoginLimiter/maxFailures`` wrong tokens a minute.
    static func addPages(to router: Router<BasicRequestContext>, pool: PostgresConnectionPool, token: Secret?, host: String,
                         now: @escaping @Sendable () throws -> Date = { Date() }) {
        let session = Session()
        let limiter = LoginLimiter()
        @Sendable func page(_ request: Request, _ render: @escaping @Sendable (PostgresConnection) async throws -> (HTTPResponse.Status, String))
            async -> Response {
            if token == nil, !hostAllowed(request.head.authority, bound: host) {
                return html(.misdirectedRequest, StatusPages.message("Misdirected", "This page answers only at the address serve is bound to."))
            }
            guard signedIn(request, token: token, session: session) else {
                return html(.unauthorized, StatusPages.login(failed: false))
            }
            do {
                let (status, text) = try await pool.withConnection { try await render($0) }
                return html(status, text)
            } catch {
                return html(.serviceUnavailable, StatusPages.message("Unavailable", "The database could not be read: \(error)"))
            }
        }
        router.get("/") { request, _ in
            await page(request) { (.ok, StatusPages.overview(try await StatusStore($0).pairs())) }
        }
        router.get("/definitions/:key") { request, context in
            let key = (context.parameters.get("key") ?? "").removingPercentEncoding ?? ""
            return await page(request) { db in
                let store = StatusPageStore(db)
                guard let definition = try await store.definition(key) else {
                    return (.notFound, StatusPages.message("Not found", "No definition has the key \(key)."))
                }
                return (.ok, StatusPages.definition(definition, runs: try await store.runs(of: key),
                                                    changes: try await store.changes(of: key), failures: try await store.failures(of: key)))
            }
        }
        router.get("/destinations/:name") { request, context in
            let name = (context.parameters.get("name") ?? "").removingPercentEncoding ?? ""
            return await page(request) { db in
                let store = StatusPageStore(db)
                guard let destination = try await store.destination(name) else {
                    return (.notFound, StatusPages.message("Not found", "No destination is called \(name)."))
                }
                return (.ok, StatusPages.destination(destination, runs: try await store.runs(toDestination: name),
                                                     failures: try await store.failures(toDestination: name)))
            }
        }
        router.get("/profiles") { request, _ in
            let q = String((request.uri.queryParameters.get("q") ?? "").prefix(1_024))
            return await page(request) { db in
                (.ok, StatusPages.profileSearch(q, q.isEmpty ? [] : try await ProfileReads(db).find(q)))
            }
        }
        router.get("/profiles/:id") { request, context in
            let id = (context.parameters.get("id") ?? "").removingPercentEncoding ?? ""
            return await page(request) { db in
                guard let profile = try await ProfileReads(db).profile(id) else {
                    return (.notFound, StatusPages.message("Not found", "No profile has the id \(id), and nothing is kept about one."))
                }
                return (.ok, StatusPages.profile(profile))
            }
        }
        router.get("/profiles/:id/explain/:key") { request, context in
            let id = (context.parameters.get("id") ?? "").removingPercentEncoding ?? ""
            let key = (context.parameters.get("key") ?? "").removingPercentEncoding ?? ""
            return await page(request) { db in
                do {
                    let explanation = try await Explainer(db).explain(key: key, profile: .profileID(id), at: try now())
                    return (.ok, StatusPages.explanation(profileID: id, key: key, ExplanationText(explanation)))
                } catch where error is UnknownKey || error is UnknownProfile {
                    return (.notFound, StatusPages.message("Not found", "\(error)"))
                }
            }
        }
        router.get("/login") { _, _ in html(.ok, StatusPages.login(failed: false)) }
        router.post("/login") { request, _ -> Response in
            guard limiter.allows() else {
                var response = html(.tooManyRequests, StatusPages.message("Too many attempts", "Too many wrong tokens: wait a minute."))
                response.headers[.retryAfter] = "60"
                return response
            }
            let body = (try? await request.body.collect(upTo: 16 << 10)).map { String(buffer: $0) } ?? ""
            guard let token, token.matches(formValue("token", in: body) ?? "") else {
                limiter.failed()
                return html(.unauthorized, StatusPages.login(failed: true))
            }
            // The cookie holds this process's session value, not the token: HttpOnly, sent back
            // to this server's pages only.
            return Response(status: .seeOther, headers: [
                .location: "/", .setCookie: "\(cookieName)=\(session.value.revealed); Path=/; HttpOnly; SameSite=Strict",
            ])
        }
    }

    static let cookieName = "engage_ui_session"

    /// A signed-in browser's cookie value: 32 random bytes drawn when `serve` starts (a restart
    /// signs everyone out). It says nothing of the token.
    struct Session: Sendable {
        let value: Secret = {
            var generator = SystemRandomNumberGenerator()
            return Secret((0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined())
        }()
    }

    /// Wrong tokens posted to `/login`: at most ``maxFailures`` a minute, for the whole process.
    final class LoginLimiter: Sendable {
        static let maxFailures = 5
        private let failures = NIOLockedValueBox<[ContinuousClock.Instant]>([])
        func allows() -> Bool {
            let since = ContinuousClock.now - .seconds(60)
            return failures.withLockedValue { list in
                list.removeAll { $0 < since }
                return list.count < Self.maxFailures
            }
        }
        func failed() { failures.withLockedValue { $0.append(ContinuousClock.now) } }
    }

    /// True without a token, else when the request carries it as a bearer token, or the session cookie.
    static func signedIn(_ request: Request, token: Secret?, session: Session) -> Bool {
        guard let token else { return true }
        if let bearer = bearerToken(request) { return token.matches(bearer) }
        return session.value.matches(request.cookies[cookieName]?.value ?? "")
    }

    /// Whether a request's `Host` (its authority) names the address serve is bound to, or a
    /// loopback name; the port is not compared.
    static func hostAllowed(_ authority: String?, bound: String) -> Bool {
        guard let authority else { return false }
        var host = authority.lowercased()
        if host.hasPrefix("[") { host = String(host.dropFirst().prefix { $0 != "]" }) }
        else if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        let boundHost = bound.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return host == boundHost || host == "localhost" || isLoopback(host)
    }

    /// A field of an `application/x-www-form-urlencoded` body.
    static func formValue(_ name: String, in body: String) -> String? {
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            if parts.count == 2, parts[0] == name { return parts[1] }
        }
        return nil
    }

    /// True for an address only this machine can reach: `localhost`, an IPv4 address in
    /// 127.0.0.0/8 (four decimal octets, parsed: not a name that starts with "127."), or `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "localhost" { return true }
        var ipv6 = in6_addr()
        if inet_pton(AF_INET6, host, &ipv6) == 1 {
            return withUnsafeBytes(of: &ipv6) { bytes in bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1 }
        }
        var ipv4 = in_addr()
        guard inet_pton(AF_INET, host, &ipv4) == 1 else { return false }
        return UInt32(bigEndian: ipv4.s_addr) >> 24 == 127
    }

    /// Headers every page carries: no script, style and images from the page itself only, never
    /// framed, no referrer leaves, no content sniffing.
    static let securityHeaders: HTTPFields = [
        .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        .xContentTypeOptions: "nosniff",
        .init("Referrer-Policy")!: "no-referrer",
        .init("X-Frame-Options")!: "DENY",
    ]

    static func html(_ status: HTTPResponse.Status, _ body: String) -> Response {
        var headers: HTTPFields = [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"]
        headers.append(contentsOf: securityHeaders)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}
