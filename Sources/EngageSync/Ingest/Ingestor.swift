import EngageCore
import EngageStore
import Foundation
import PostgresClient

/// `ingest`: Segment-spec NDJSON into `engage.profiles` / `engage.events`, streamed in batches
/// (memory stays flat however large the file). A malformed line is reported as `line N: reason`
/// and skipped; the rest load.
///
/// Rows are split into `lanes` by profile key, each with its own connection, so PostgreSQL
/// loads on every core while Swift parses; one profile's calls always share a lane and so
/// apply in file order. An alias touches two profiles: it waits for everything before it, and
/// everything after it waits for it.
public struct Ingestor: Sendable {
    public struct Report: Sendable {
        public var lines = 0
        public var rejected = 0
        public var counts = IngestCounts()
        public var seconds = 0.0
        public var eventsPerSecond: Double { seconds > 0 ? Double(counts.eventsInserted + counts.duplicateEvents) / seconds : 0 }
    }

    public let pool: PostgresConnectionPool
    public let batchSize: Int
    public let lanes: Int

    /// `pool` gives one connection per lane; it belongs to the caller.
    public init(pool: PostgresConnectionPool, batchSize: Int = 10_000, lanes: Int = 2) {
        self.pool = pool
        self.batchSize = batchSize
        self.lanes = max(1, lanes)
    }

    /// `progress` is told the lines and bytes read so far, every 10,000 lines.
    public func ingest(path: String?, onBadLine: @escaping @Sendable (String) -> Void,
                       progress: (@Sendable (_ lines: Int, _ bytes: Int) -> Void)? = nil) async throws -> Report {
        try await pool.withConnections(lanes) { connections in
            let stores = connections.map(IngestStore.init)
            for store in stores { try await store.prepare() }
            return try await ingest(stores: stores, path: path, onBadLine: onBadLine, progress: progress)
        }
    }

    private func ingest(stores: [IngestStore], path: String?, onBadLine: @escaping @Sendable (String) -> Void,
                        progress: (@Sendable (Int, Int) -> Void)?) async throws -> Report {
        let started = ContinuousClock.now
        var report = Report()
        var batches = Array(repeating: [IngestRow](), count: stores.count)
        var aliases: [IngestRow] = []
        var bytes = 0
        // At most one batch per lane is loading while the next is parsed.
        var loading = [Task<(IngestCounts, Int), Error>?](repeating: nil, count: stores.count)

        func add(_ loaded: (counts: IngestCounts, rejected: Int)) {
            report.counts += loaded.counts
            report.rejected += loaded.rejected
        }
        func finish(_ lane: Int) async throws {
            guard let task = loading[lane] else { return }
            loading[lane] = nil
            add(try await task.value)
        }
        func flush(_ lane: Int) async throws {
            try await finish(lane)
            guard !batches[lane].isEmpty else { return }
            let rows = batches[lane], store = stores[lane]
            batches[lane].removeAll(keepingCapacity: true)
            loading[lane] = Task { try await Self.load(rows, store: store, onBadLine: onBadLine) }
        }
        func drain() async throws {
            for lane in stores.indices { try await flush(lane) }
            for lane in stores.indices { try await finish(lane) }
        }
        func applyAliases() async throws {
            add(try await Self.load(aliases, store: stores[0], onBadLine: onBadLine))
            aliases.removeAll()
        }

        do {
            try await LineReader(path: path).forEachLine { line in
                report.lines += 1
                bytes += line.bytes.count + 1
                if report.lines % 10_000 == 0 { progress?(report.lines, bytes) }
                switch Self.parse(line) {
                case .success(let row?) where row.kind == .alias:
                    if aliases.isEmpty { try await drain() }
                    aliases.append(row)
                    if aliases.count >= batchSize { try await applyAliases() }
                case .success(let row?):
                    if !aliases.isEmpty { try await applyAliases() }
                    let lane = stores.count == 1 ? 0 : Int(StableHash.fnv1a(row.profileKey) % UInt64(stores.count))
                    batches[lane].append(row)
                    if batches[lane].count >= batchSize { try await flush(lane) }
                case .success(nil):
                    break // blank line
                case .failure(let reason):
                    report.rejected += 1
                    onBadLine("line \(line.number): \(reason.description)")
                }
            }
            if !aliases.isEmpty { try await applyAliases() }
            try await drain()
            progress?(report.lines, bytes)
        } catch {
            // Let every lane's statement end before the connections close.
            for task in loading { _ = try? await task?.value }
            throw error
        }
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
        let counts = try await store.apply()
        Log.ingest.debug("loaded \(rows.count) lines up to line \(rows.last?.line ?? 0): +\(counts.eventsInserted) events, +\(counts.profilesCreated) profiles")
        return (counts, refused)
    }

    struct Reason: Error, CustomStringConvertible { var description: String }

    /// One NDJSON line → a row to load, nil for a blank line, or why it is malformed.
    static func parse(_ line: LineReader.Line) -> Result<IngestRow?, Reason> {
        if line.tooLong { return .failure(Reason(description: "longer than 1 MiB")) }
        guard let text = String(validating: line.bytes, as: UTF8.self) else {
            return .failure(Reason(description: "not valid UTF-8"))
        }
        if line.bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return .success(nil) }
        if containsNUL(line.bytes) {
            return .failure(Reason(description: "contains a NUL character, which PostgreSQL cannot store"))
        }
        let parsed: SegmentMessage.WithPayloads
        do { parsed = try SegmentMessage.parseKeepingPayloads(line.bytes) } catch {
            return .failure(Reason(description: "\(error)"))
        }
        let message = parsed.message
        if let problem = message.identifierProblem { return .failure(Reason(description: problem)) }
        let key: String
        if message.type == .alias {
            guard message.previousId != nil, let user = message.userId else {
                return .failure(Reason(description: "an alias needs previousId and userId"))
            }
            key = user
        } else {
            guard let k = message.userId ?? message.anonymousId else {
                return .failure(Reason(description: "needs userId or anonymousId"))
            }
            key = k
        }
        // Without a messageId, the line's own hash keeps re-ingesting idempotent.
        let messageID = message.messageId ?? "line-" + StableHash.hex(text)
        var row = IngestRow(line: line.number, kind: message.type, profileKey: key, userID: message.userId,
                            anonymousID: message.anonymousId, previousID: message.previousId, messageID: messageID,
                            event: message.event, occurredAt: message.timestamp)
        switch message.type {
        case .track: row.payload = parsed.propertiesJSON
        case .page, .screen: row.payload = parsed.propertiesJSON; row.name = message.name
        case .identify: row.payload = parsed.traitsJSON; row.email = message.traits["email"]?.stringValue
        case .group: row.payload = parsed.traitsJSON; row.groupID = message.groupId
        case .alias: break
        }
        return .success(row)
    }

    /// A raw NUL byte, or a `\u0000` escape (one not itself escaped as `\\u0000`).
    static func containsNUL(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return false }
            if memchr(base, 0, b.count) != nil { return true }
            var i = 0
            while i < b.count {
                guard let hit = memchr(base + i, 0x5C, b.count - i) else { return false }
                let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                if at + 5 < b.count, b[at + 1] == 0x75, b[at + 2] == 0x30, b[at + 3] == 0x30, b[at + 4] == 0x30, b[at + 5] == 0x30 {
                    return true
                }
                i = at + 2 // skip the escaped character, so `\\` never starts an escape
            }
            return false
        }
    }
}
