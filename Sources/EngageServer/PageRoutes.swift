import EngageCore
import EngageStore
import Foundation
import Hummingbird
import PostgresClient
import StatusPage

extension EngageServer {
    /// The status page's routes (issue 17): `GET /`, `/definitions/KEY`, `/destinations/NAME`,
    /// read-only, from the store's reads. With a `token` (`ENGAGE_UI_TOKEN`) each asks for it as
    /// a bearer token or the cookie `POST /login` sets; without one (a loopback address) none does.
    static func addPages(to router: Router<BasicRequestContext>, pool: PostgresConnectionPool, token: Secret?) {
        @Sendable func page(_ request: Request, _ render: @escaping @Sendable (PostgresConnection) async throws -> (HTTPResponse.Status, String))
            async -> Response {
            guard signedIn(request, token: token) else {
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
            let key = context.parameters.get("key") ?? ""
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
            let name = context.parameters.get("name") ?? ""
            return await page(request) { db in
                let store = StatusPageStore(db)
                guard let destination = try await store.destination(name) else {
                    return (.notFound, StatusPages.message("Not found", "No destination is called \(name)."))
                }
                return (.ok, StatusPages.destination(destination, runs: try await store.runs(toDestination: name),
                                                     failures: try await store.failures(toDestination: name)))
            }
        }
        router.get("/login") { _, _ in html(.ok, StatusPages.login(failed: false)) }
        router.post("/login") { request, _ -> Response in
            let body = (try? await request.body.collect(upTo: 16 << 10)).map { String(buffer: $0) } ?? ""
            guard let token, token.matches(formValue("token", in: body) ?? "") else {
                return html(.unauthorized, StatusPages.login(failed: true))
            }
            // The cookie holds the token itself: HttpOnly, sent back to this server's pages only.
            return Response(status: .seeOther, headers: [
                .location: "/", .setCookie: "\(cookieName)=\(cookieValue(token)); Path=/; HttpOnly; SameSite=Strict",
            ])
        }
    }

    static let cookieName = "engage_ui_token"

    /// True without a token, else when the request carries it (bearer or cookie).
    static func signedIn(_ request: Request, token: Secret?) -> Bool {
        guard let token else { return true }
        let cookie = request.cookies[cookieName]?.value.removingPercentEncoding
        return token.matches(bearerToken(request) ?? cookie ?? "")
    }

    /// The token as a cookie value (any character but letters and digits percent-encoded).
    static func cookieValue(_ token: Secret) -> String {
        token.revealed.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }

    /// A field of an `application/x-www-form-urlencoded` body.
    static func formValue(_ name: String, in body: String) -> String? {
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            if parts.count == 2, parts[0] == name { return parts[1] }
        }
        return nil
    }

    /// True for an address only this machine can reach.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    static func html(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}
