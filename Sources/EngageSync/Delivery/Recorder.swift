import EngageStore
import NIOConcurrencyHelpers

/// Records delivery results by group commit: whatever arrived while one group was being
/// written goes in the next statement. A worker waits for its result to be recorded before it
/// sends again, so a process killed at any moment leaves at most `concurrency` rows that Vero
/// may have received but the outbox does not show as delivered.
actor Recorder {
    private let store: OutboxStore
    private let maxAttempts: Int
    private let worker: String
    private var pending: [DeliveryResult] = []
    private var waiters: [CheckedContinuation<Void, Error>] = []
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var writing = false
    private var counts = RecordedCounts()
    private var failure: Error?

    /// Results are recorded for the rows `worker` holds (see ``OutboxStore/record(_:maxAttempts:worker:)``).
    init(store: OutboxStore, maxAttempts: Int, worker: String) {
        self.store = store
        self.maxAttempts = maxAttempts
        self.worker = worker
    }

    /// Returns once `result` is committed; throws when recording it failed.
    func record(_ result: DeliveryResult) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            pending.append(result)
            waiters.append(continuation)
            startWriting()
        }
    }

    /// Queues a result without waiting (rows given back unsent).
    func enqueue(_ result: DeliveryResult) {
        pending.append(result)
        startWriting()
    }

    /// Waits until everything queued is written; returns what was recorded since the last
    /// drain, or the first error.
    func drain() async throws -> RecordedCounts {
        if writing { await withCheckedContinuation { idleWaiters.append($0) } }
        let (done, error) = (counts, failure)
        counts = RecordedCounts()
        failure = nil
        if let error { throw error }
        return done
    }

    private func startWriting() {
        guard !writing else { return }
        writing = true
        Task { await writeGroups() }
    }

    private func writeGroups() async {
        while !pending.isEmpty {
            let group = pending, groupWaiters = waiters
            pending = []
            waiters = []
            do {
                counts += try await store.record(group, maxAttempts: maxAttempts, worker: worker)
                Log.delivery.trace("recorded \(group.count) results")
                for waiter in groupWaiters { waiter.resume() }
            } catch {
                failure = failure ?? error
                for waiter in groupWaiters { waiter.resume(throwing: error) }
            }
        }
        writing = false
        for waiter in idleWaiters { waiter.resume() }
        idleWaiters = []
    }
}

/// Set once, read from any task.
/// Asks a delivery pass to stop: requests in flight finish and are recorded, rows claimed
/// but not sent are released, and no more are claimed.
public final class StopFlag: Sendable {
    private let flag = NIOLockedValueBox(false)
    public init() {}
    public var isSet: Bool { flag.withLockedValue { $0 } }
    public func set() { flag.withLockedValue { $0 = true } }
}

extension Duration {
    /// Seconds as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
