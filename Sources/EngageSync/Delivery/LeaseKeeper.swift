import EngageStore
import Foundation
import NIOConcurrencyHelpers

/// The leases of the rows one delivery worker holds, kept alive while it works on them.
///
/// A worker may hold rows for longer than its lease: a slow destination, a low rate or
/// back-off can make a batch take minutes. Every quarter of a lease the keeper renews all the
/// rows it holds in one statement (``OutboxStore/renew(ids:leaseSeconds:worker:)``); a row
/// another worker took is dropped. Before a row is sent the worker asks ``canSend(_:)``: the
/// row must still be held, with at least half its lease left as last confirmed — renewals that
/// fall behind (the database slow or unreachable) stop the sending before a lease can run out.
/// A request in flight is watched too (``runningOut(_:)``): when renewals have stopped and its
/// row has less than a sixteenth of its lease left, the request is cut off and the row retried,
/// so the lease never runs out under a request still in flight and no other worker sends a row
/// while this one is sending it. (What the destination did with a request cut off is unknown,
/// as after a crash: the row is sent again, by whichever worker holds it next.)
///
/// The deadlines are measured on this process's monotonic clock from the moment the statement
/// that set them was sent, so they never run later than the lease the database holds.
final class LeaseKeeper: Sendable {
    let leaseSeconds: Double
    let worker: String
    private let deadlines = NIOLockedValueBox<[Int: ContinuousClock.Instant]>([:])

    init(leaseSeconds: Double, worker: String) {
        self.leaseSeconds = leaseSeconds
        self.worker = worker
    }

    /// Rows whose lease was set by a statement sent at `since` (a claim, or a backlog expansion).
    func hold(_ ids: some Sequence<Int>, since: ContinuousClock.Instant) {
        let deadline = since + .seconds(leaseSeconds)
        deadlines.withLockedValue { held in
            for id in ids { held[id] = deadline }
        }
    }

    /// The row was recorded (or given back): it is no longer this worker's to renew.
    func drop(_ id: Int) {
        deadlines.withLockedValue { _ = $0.removeValue(forKey: id) }
    }

    /// What is left of the row's lease as last confirmed; nil when the row is not held.
    private func left(_ id: Int) -> Duration? {
        let now = ContinuousClock.now
        return deadlines.withLockedValue { $0[id] }.map { $0 - now }
    }

    /// Whether the row is still held with at least half its lease left.
    func canSend(_ id: Int) -> Bool {
        left(id).map { $0 >= .seconds(leaseSeconds / 2) } ?? false
    }

    /// Why a request in flight for the row must end now: the row is no longer held, or less
    /// than a sixteenth of its lease is left as last confirmed. Nil while it is safe to go on.
    func runningOut(_ id: Int) -> String? {
        guard let left = left(id) else { return "the row's lease was lost to another worker" }
        return left < .seconds(leaseSeconds / 16) ? "the row's lease was about to run out (its renewals failed)" : nil
    }

    /// How often a request in flight asks ``runningOut(_:)``: a thirty-second of a lease,
    /// between 50 ms and 1 s.
    var checkEvery: Duration { .seconds(min(1, max(0.05, leaseSeconds / 32))) }

    /// How many rows are held now.
    var count: Int { deadlines.withLockedValue { $0.count } }

    /// Renews every held row once.
    func renew(_ store: OutboxStore) async throws {
        let asked = deadlines.withLockedValue { $0 }
        guard !asked.isEmpty else { return }
        let sent = ContinuousClock.now
        let (kept, taken) = try await store.renew(ids: Array(asked.keys), leaseSeconds: leaseSeconds, worker: worker)
        let deadline = sent + .seconds(leaseSeconds)
        let lost = deadlines.withLockedValue { held -> Int in
            var lost = 0
            // Only rows still held as asked about: one recorded meanwhile is gone from `held`
            // (or about to be), one recorded and claimed again has a newer deadline.
            for (id, before) in asked where held[id] == before {
                if kept.contains(id) {
                    held[id] = deadline
                } else if taken.contains(id) {
                    held[id] = nil
                    lost += 1
                }
            }
            return lost
        }
        if lost > 0 {
            Log.delivery.warning("\(lost) leased rows were taken by another worker before this one renewed them; they will not be sent from here")
        }
    }

    /// Renews every quarter of a lease until cancelled. A failed renewal is logged and tried
    /// again at the next beat; meanwhile ``canSend(_:)`` lets the deadlines run out.
    func keepAlive(_ store: OutboxStore) async {
        let interval = Duration.seconds(leaseSeconds / 4)
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            do {
                try await renew(store)
            } catch {
                Log.delivery.error("renewing the lease of \(count) rows failed: \(error)")
            }
        }
    }
}
