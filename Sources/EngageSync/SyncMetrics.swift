import Foundation
import Metrics

/// The counters a run and a delivery pass report through swift-metrics
/// (docs/operations.md#running-as-a-service-engage-sync-serve). Without a
/// metrics backend (every command but `serve`) they cost next to nothing; `serve` exports them
/// on `/metrics`.
enum SyncMetrics {
    /// A pair's run as it ended: its status, the changes it enqueued, a guardrail block, drift.
    static func record(_ outcome: PairOutcome) {
        guard outcome.status != .planned else { return }
        let pair = [("key", outcome.key), ("destination", outcome.destination)]
        Counter(label: "engage_sync_runs_total",
                dimensions: pair + [("mode", outcome.mode.rawValue), ("status", outcome.status.rawValue)]).increment()
        let c = outcome.counts
        if outcome.status != .blocked {
            for (op, n) in [("enter", c.entered), ("exit", c.exited), ("change", c.changed)] where n > 0 {
                Counter(label: "engage_sync_changes_total", dimensions: pair + [("op", op)]).increment(by: n)
            }
        }
        if outcome.status == .blocked {
            Counter(label: "engage_sync_guardrail_blocks_total", dimensions: pair).increment()
        }
        if let drift = outcome.evaluation?.drift, drift > 0 {
            Counter(label: "engage_sync_drift_total", dimensions: [("key", outcome.key)]).increment(by: drift)
        }
    }

    /// What a delivery pass did with its rows.
    static func record(_ report: DeliveryReport, destination: String) {
        for (result, n) in [("delivered", report.delivered), ("retried", report.retried), ("failed", report.failed),
                            ("rejected", report.rejected), ("repeated", report.repeated)] where n > 0 {
            Counter(label: "engage_sync_deliveries_total", dimensions: [("destination", destination), ("result", result)])
                .increment(by: n)
        }
    }

    /// One request to the destination, answered or not.
    static func request(_ duration: Duration, destination: String) {
        Timer(label: "engage_sync_delivery_seconds", dimensions: [("destination", destination)]).record(duration: duration)
    }
}
