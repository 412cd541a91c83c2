import EngageCore
import EngageStore
import Hummingbird
import PostgresClient
import Prometheus

extension EngageServer {
    /// `GET /healthz`: 200 `{"status":"ok"}` when PostgreSQL answers, else 503 with the
    /// reason. `GET /metrics`: the counters of runs, changes and deliveries, the request
    /// latency histogram, and the database-held gauges, in Prometheus text. `POST
    /// /webhooks/vero`: Vero's email events (docs/operations.md#email-events-from-vero), when a
    /// secret is set. The status
    /// page (``addPages(to:pool:token:host:now:)``).
    static func router(pool: PostgresConnectionPool, registry: PrometheusCollectorRegistry,
                       configuration: ServerConfiguration) -> Router<BasicRequestContext> {
        let router = Router()
        let webhookSecret = configuration.webhookSecret
        addPages(to: router, pool: pool, token: configuration.uiToken, host: configuration.host, now: configuration.now)
        router.get("/healthz") { _, _ -> Response in
            do {
                try await pool.withConnection { try await $0.query("SELECT 1") }
                return json(.ok, ["status": "ok"])
            } catch {
                return json(.serviceUnavailable, ["status": "unavailable", "reason": .string("PostgreSQL is unreachable: \(error)")])
            }
        }
        router.post("/webhooks/vero") { request, context -> Response in
            guard let webhookSecret else {
                return json(.notFound, ["status": "off", "reason": "webhooks are off: set ENGAGE_WEBHOOK_SECRET to turn them on"])
            }
            let given = request.uri.queryParameters.get("secret") ?? bearerToken(request) ?? ""
            guard webhookSecret.matches(given) else {
                return json(.unauthorized, ["status": "unauthorized", "reason": "a wrong or missing secret"])
            }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: Self.maxWebhookBytes) } catch {
                return json(.badRequest, ["status": "rejected", "reason": "the body is over 1 MiB"])
            }
            switch VeroWebhookEvent.parse(Array(body.readableBytesView)) {
            case .failure(let invalid):
                context.logger.warning("webhook refused (400): \(invalid.reason)")
                return json(.badRequest, ["status": "rejected", "reason": .string(invalid.reason)])
            case .success(let event):
                do {
                    // Committed before the answer: an acknowledged event is never lost.
                    let stored = try await pool.withConnection { try await WebhookStore($0).record(event) }
                    return json(.ok, ["status": "ok", "event": .string(event.event), "stored": .bool(stored)])
                } catch let error as PostgresError where error.kind == .server && Self.neverStorable(error) {
                    // Data PostgreSQL refuses (class 22, 54): a retry cannot succeed, so a 4xx.
                    context.logger.warning("webhook refused (400): PostgreSQL cannot store it: \(error.message)")
                    return json(.badRequest, ["status": "rejected", "reason": .string("the event cannot be stored: \(error.message)")])
                } catch {
                    context.logger.error("webhook not stored (503, Vero will retry): \(error)")
                    return json(.serviceUnavailable, ["status": "unavailable", "reason": "the event could not be stored; Vero will retry"])
                }
            }
        }
        router.get("/metrics") { _, _ -> Response in
            do {
                let gauges = try await pool.withConnection { try await GaugeStore($0).gauges() }
                // The process's counters and histogram, then the gauges the database holds.
                var response = text(.ok, registry.emitToString() + PrometheusText.render(gauges))
                response.headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return response
            } catch {
                return text(.serviceUnavailable, "cannot read the metrics: \(error)\n")
            }
        }
        return router
    }

    static let maxWebhookBytes = 1 << 20

    /// Errors of the data itself (class 22, data exception; 54, program limit exceeded): the
    /// same body fails the same way however often it is sent.
    static func neverStorable(_ error: PostgresError) -> Bool {
        guard let state = error.sqlState else { return false }
        return state.hasPrefix("22") || state.hasPrefix("54")
    }

    /// The token of an `Authorization: Bearer …` header, if any.
    static func bearerToken(_ request: Request) -> String? {
        request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
    }

    /// Compares in time that depends on the lengths only, not on where the texts differ.
    static func json(_ status: HTTPResponse.Status, _ body: JSONValue) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body.jsonString)))
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}
