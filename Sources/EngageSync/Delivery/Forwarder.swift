import AsyncHTTPClient
import EngageCore
import EngageStore
import Foundation
import PostgresClient

/// `forward`: Segment NDJSON straight through the Vero mapper, via the outbox, so every
/// message's fate is recorded. Malformed lines are reported and skipped; the rest go on.
public struct Forwarder: Sendable {
    public struct Report: Sendable {
        public var lines = 0
        public var malformed = 0
        public var rejected = 0
        public var enqueued = 0
        public var runID = 0
        public var delivery = DeliveryReport()
    }

    public let pool: PostgresConnectionPool
    public let client: HTTPClient

    /// `pool` gives the connections, `client` sends; both belong to the caller.
    public init(pool: PostgresConnectionPool, client: HTTPClient) {
        self.pool = pool
        self.client = client
    }

    /// Reads `path` (or stdin), enqueues, then delivers. `onBadLine` receives `line N: reason`;
    /// `deliveryProgress` gives what to call with the delivery's reports, if anything.
    public func forward(path: String?, destinationName: String, options: DeliveryOptions,
                        onBadLine: @Sendable (String) -> Void,
                        deliveryProgress: @Sendable (Destination) async -> (@Sendable (DeliveryReport) -> Void)? = { _ in nil })
        async throws -> Report {
        try await pool.withConnection { db in
            try await forward(db: db, path: path, destinationName: destinationName, options: options, onBadLine: onBadLine,
                              deliveryProgress: deliveryProgress)
        }
    }

    private func forward(db: PostgresConnection, path: String?, destinationName: String,
                         options: DeliveryOptions, onBadLine: @Sendable (String) -> Void,
                         deliveryProgress: @Sendable (Destination) async -> (@Sendable (DeliveryReport) -> Void)?)
        async throws -> Report {
        let destination = try await DestinationRepository(db).find(name: destinationName)
        _ = try Deliverer.token(for: destination) // fail before reading anything when the token is missing
        let runs = SyncRunStore(db)
        let outbox = OutboxStore(db)
        var report = Report()
        report.runID = try await runs.start(computationID: nil, destinationID: destination.id, mode: .forward)
        var pending: [(message: String, rejection: String?)] = []
        do {
            try await LineReader(path: path).forEachLine { line in
                report.lines += 1
                if line.tooLong {
                    report.malformed += 1
                    onBadLine("line \(line.number): longer than 1 MiB; skipped")
                    return
                }
                guard let text = String(validating: line.bytes, as: UTF8.self) else {
                    report.malformed += 1
                    onBadLine("line \(line.number): not valid UTF-8")
                    return
                }
                if text.allSatisfy(\.isWhitespace) { return }
                do {
                    let message = try SegmentMessage(line: text)
                    var rejection: String?
                    if case .failure(let r) = VeroMapper.map(message) {
                        rejection = r.description
                        report.rejected += 1
                    } else {
                        report.enqueued += 1
                    }
                    pending.append((text, rejection))
                } catch {
                    report.malformed += 1
                    onBadLine("line \(line.number): \(error)")
                }
                if pending.count >= 1_000 {
                    try await outbox.enqueueForward(runID: report.runID, destinationID: destination.id, rows: pending)
                    pending.removeAll(keepingCapacity: true)
                }
            }
            try await outbox.enqueueForward(runID: report.runID, destinationID: destination.id, rows: pending)
            let deliverer = Deliverer(destination: destination, pool: pool, client: client, options: options)
            report.delivery = try await deliverer.run(progress: await deliveryProgress(destination))
            var counts = RunCounts()
            counts.members = report.enqueued + report.rejected
            counts.entered = report.enqueued
            counts.skipped = report.rejected
            let ok = report.malformed == 0 && report.rejected == 0 && report.delivery.failed == 0
            try await runs.finish(id: report.runID, status: ok ? .succeeded : .partial, counts: counts,
                                  deliverMs: report.delivery.seconds * 1000)
            return report
        } catch {
            try? await runs.finish(id: report.runID, status: .failed, error: "\(error)")
            throw error
        }
    }
}
