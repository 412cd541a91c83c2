import EngageCore
import EngageStore
import Foundation
import PostgresClient

/// `ingest`: Segment-spec NDJSON into `engage.profiles` / `engage.events`, streamed in batches
/// (memory stays flat however large the file). A malformed line is reported as `line N: reason`
/// and skipped; the rest load.
public struct Ingestor: Sendable {
    public struct Report: Sendable {
        public var lines = 0
        public var rejected = 0
        public var counts = IngestCounts()
        public var seconds = 0.0
        public var eventsPerSecond: Double { seconds > 0 ? Double(counts.eventsInserted + counts.duplicateEvents) / seconds : 0 }
    }

    public let databaseURL: String?
    public let batchSize: Int

    public init(databaseURL: String?, batchSize: Int = 20_000) {
        self.databaseURL = databaseURL
        self.batchSize = batchSize
    }

    public func ingest(path: String?, onBadLine: @escaping @Sendable (String) -> Void) async throws -> Report {
        try await PostgresConnection.withConnection(databaseURL) { db in
            try await ingest(db: db, path: path, onBadLine: onBadLine)
        }
    }

    private func ingest(db: PostgresConnection, path: String?, onBadLine: @escaping @Sendable (String) -> Void) async throws -> Report {
        let store = IngestStore(db)
        try await store.prepare()
        let started = ContinuousClock.now
        var report = Report()
        var batch: [IngestRow] = []
        batch.reserveCapacity(batchSize)
        // One batch is loaded while the next is parsed: PostgreSQL and Swift work at once.
        var loading: Task<(IngestCounts, Int), Error>?

        func finishLoading() async throws {
            guard let task = loading else { return }
            loading = nil
            let (counts, rejected) = try await task.value
            report.counts += counts
            report.rejected += rejected
        }

        func flush() async throws {
            try await finishLoading()
            guard !batch.isEmpty else { return }
            let rows = batch
            batch.removeAll(keepingCapacity: true)
            loading = Task { try await Self.load(rows, store: store, onBadLine: onBadLine) }
        }

        try await LineReader(path: path).forEachLine { line in
            report.lines += 1
            switch Self.parse(line) {
            case .success(let row?): batch.append(row)
            case .success(nil): break // blank line
            case .failure(let reason):
                report.rejected += 1
                onBadLine("line \(line.number): \(reason.description)")
            }
            if batch.count >= batchSize { try await flush() }
        }
        try await flush()
        try await finishLoading()
        report.seconds = (ContinuousClock.now - started).seconds
        return report
    }

    /// Stages and applies one batch. A document PostgreSQL refuses makes the batch go in line
    /// by line, so only the bad lines are skipped. Returns the counts and how many were refused.
    static func load(_ rows: [IngestRow], store: IngestStore, onBadLine: @Sendable (String) -> Void)
        async throws -> (IngestCounts, Int) {
        var refused = 0
        do {
            try await store.stage(rows)
        } catch let error as PostgresError where error.kind == .server {
            try await store.clearStage()
            for row in rows {
                do { try await store.stageOne(row) } catch let e as PostgresError where e.kind == .server {
                    refused += 1
                    onBadLine("line \(row.line): PostgreSQL cannot store it (\(e.message))")
                }
            }
        }
        return (try await store.apply(), refused)
    }

    struct Reason: Error, CustomStringConvertible { var description: String }

    /// One NDJSON line → a row to load, nil for a blank line, or why it is malformed.
    static func parse(_ line: LineReader.Line) -> Result<IngestRow?, Reason> {
        if line.tooLong { return .failure(Reason(description: "longer than 1 MiB")) }
        guard let text = String(validating: line.bytes, as: UTF8.self) else {
            return .failure(Reason(description: "not valid UTF-8"))
        }
        if text.allSatisfy(\.isWhitespace) { return .success(nil) }
        if line.bytes.contains(0) || text.contains("\\u0000") {
            return .failure(Reason(description: "contains a NUL character, which PostgreSQL cannot store"))
        }
        let message: SegmentMessage
        do { message = try SegmentMessage(line: text) } catch { return .failure(Reason(description: "\(error)")) }
        let key: String
        if message.type == .alias {
            guard let previous = message.previousId, let user = message.userId else {
                return .failure(Reason(description: "an alias needs previousId and userId"))
            }
            _ = previous
            key = user
        } else {
            guard let k = message.userId ?? message.anonymousId else {
                return .failure(Reason(description: "needs userId or anonymousId"))
            }
            key = k
        }
        // Without a messageId, the line's own hash keeps re-ingesting idempotent.
        let messageID = message.messageId ?? "line-" + StableHash.hex(text)
        return .success(IngestRow(line: line.number, kind: message.type.rawValue, profileKey: key, userID: message.userId,
                                  anonymousID: message.anonymousId, previousID: message.previousId, messageID: messageID,
                                  event: message.event, occurredAt: message.timestamp, json: text))
    }
}
