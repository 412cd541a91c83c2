import EngageStore
import EngageSync
import Foundation
import NIOConcurrencyHelpers
import PostgresClient

/// Progress of a long command on standard error: done of total, rate and time left.
/// On a terminal, one line rewritten in place (at most five times a second); otherwise, when
/// `ENGAGE_SYNC_LOG_LEVEL` is `info` or more verbose, a plain line every
/// `ENGAGE_SYNC_PROGRESS_SECONDS` (default 10); otherwise nothing, so cron mail stays quiet.
final class ProgressLine: Sendable {
    enum Mode: Equatable {
        case terminal
        case periodic(seconds: Double)
    }

    let label: String
    let unit: String
    let total: Int?
    let mode: Mode
    private let started = ContinuousClock.now
    private struct State {
        var lastShown: ContinuousClock.Instant?
        var done = 0
        var detail = ""
        var shownOnce = false
        /// What the last line shown said (done, detail).
        var shown: (Int, String)?
    }
    private let state = NIOLockedValueBox(State())

    /// Whether a progress line would be shown (to skip counting a total when not).
    static func wanted(environment: [String: String] = ProcessInfo.processInfo.environment,
                       terminal: Bool = isatty(STDERR_FILENO) == 1) -> Bool {
        ProgressLine(label: "", unit: "", total: nil, environment: environment, terminal: terminal) != nil
    }

    /// Nil when nothing should be shown (stderr is not a terminal and the log level is quieter
    /// than `info`). `total` is what `done` counts towards, when known.
    init?(label: String, unit: String, total: Int?, environment: [String: String] = ProcessInfo.processInfo.environment,
          terminal: Bool = isatty(STDERR_FILENO) == 1) {
        if terminal {
            mode = .terminal
        } else {
            let level = environment["ENGAGE_SYNC_LOG_LEVEL"]?.lowercased() ?? "warning"
            guard ["trace", "debug", "info"].contains(level) else { return nil }
            mode = .periodic(seconds: environment["ENGAGE_SYNC_PROGRESS_SECONDS"].flatMap(Double.init).map { max(0, $0) } ?? 10)
        }
        self.label = label
        self.unit = unit
        self.total = total
    }

    /// Reports `done` (and a short detail, e.g. retries and failures); shown when due.
    func update(done: Int, detail: String = "") {
        let now = ContinuousClock.now
        let line: String? = state.withLockedValue { s in
            s.done = done
            s.detail = detail
            let interval: Duration = switch mode {
            case .terminal: .milliseconds(200)
            case .periodic(let seconds): .milliseconds(Int64(seconds * 1000))
            }
            if let last = s.lastShown, now - last < interval { return nil }
            s.lastShown = now
            s.shownOnce = true
            s.shown = (done, detail)
            return render(done: done, detail: detail, at: now)
        }
        if let line { write(line) }
    }

    /// Shows the final figures; on a terminal, ends the line.
    func finish() {
        let (done, detail, shown, stale) = state.withLockedValue { s in
            (s.done, s.detail, s.shownOnce, s.shown.map { $0.0 != s.done || $0.1 != s.detail } ?? true)
        }
        switch mode {
        case .terminal:
            write(render(done: done, detail: detail, at: .now))
            FileHandle.standardError.write(Data("\n".utf8))
        case .periodic:
            // The figures at the end, unless the last line already said them.
            if shown, stale { write(render(done: done, detail: detail, at: .now)) }
        }
    }

    private func write(_ line: String) {
        let text = mode == .terminal ? "\r\u{1B}[2K" + line : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    private func render(done: Int, detail: String, at now: ContinuousClock.Instant) -> String {
        Self.render(label: label, unit: unit, done: done, total: total, seconds: Self.seconds(now - started), detail: detail)
    }

    /// `vero: 12,000/50,000 rows (24%), 4,100/s, 9 s left; 3 retrying`.
    static func render(label: String, unit: String, done: Int, total: Int?, seconds: Double, detail: String) -> String {
        let rate = seconds > 0 ? Double(done) / seconds : 0
        var line = "\(label): \(grouped(done))"
        if let total, total > 0 {
            line += "/\(grouped(total)) \(unit) (\(min(100, done * 100 / total))%)"
        } else {
            line += " \(unit)"
        }
        line += ", \(grouped(Int(rate.rounded())))/s"
        if let total, rate > 0, done < total {
            line += ", \(duration(Double(total - done) / rate)) left"
        }
        if !detail.isEmpty { line += "; \(detail)" }
        return line
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    static func grouped(_ n: Int) -> String {
        let digits = String(abs(n))
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded(.up))
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        return "\(s / 3600) h \(s % 3600 / 60) min"
    }
}

/// Progress lines for delivery passes, one destination at a time: counts towards what waits
/// for the destination when the pass starts.
final class DeliveryProgress: Sendable {
    let pool: PostgresConnectionPool
    private let current = NIOLockedValueBox<ProgressLine?>(nil)

    init(pool: PostgresConnectionPool) { self.pool = pool }

    /// What to call with a pass's reports (nil when nothing is shown).
    func start(_ destination: Destination) async -> (@Sendable (DeliveryReport) -> Void)? {
        guard ProgressLine.wanted() else { return nil }
        let total = try? await pool.withConnection { try await StatusStore($0).waiting(destination: destination.name) }
        guard let line = ProgressLine(label: "delivering to \(destination.name)", unit: "rows", total: total) else { return nil }
        current.withLockedValue { $0 = line }
        return { report in
            line.update(done: report.delivered + report.failed + report.rejected,
                        detail: "\(report.retried) retried, \(report.failed) failed, \(report.rejected) rejected")
        }
    }

    /// Ends the current pass's line.
    func finish() {
        current.withLockedValue { line in
            line?.finish()
            line = nil
        }
    }
}

/// `run` and `resync`: a line for the pairs being evaluated, then one per delivery pass.
func syncProgress(pool: PostgresConnectionPool) -> SyncProgress {
    let delivery = DeliveryProgress(pool: pool)
    let planning = NIOLockedValueBox<ProgressLine?>(nil)
    var progress = SyncProgress()
    progress.planned = { done, total, key in
        let line = planning.withLockedValue { line -> ProgressLine? in
            if line == nil { line = ProgressLine(label: "evaluating", unit: "pairs", total: total) }
            return line
        }
        line?.update(done: done, detail: key)
        if done == total { line?.finish() }
    }
    progress.delivering = { await delivery.start($0) }
    progress.delivered = { _ in delivery.finish() }
    return progress
}
