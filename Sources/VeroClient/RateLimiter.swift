import Foundation

/// A token bucket: `rate` tokens a second, holding at most `burst`. `acquire()` waits for a
/// token; callers are served in arrival order.
public actor TokenBucket {
    private let rate: Double
    private let burst: Double
    private var tokens: Double
    private var last: ContinuousClock.Instant

    public init(rate: Double, burst: Double? = nil) {
        self.rate = max(rate, 0.001)
        self.burst = max(1, burst ?? max(1, rate / 10))
        self.tokens = self.burst
        self.last = .now
    }

    /// Takes one token, sleeping until one is available.
    public func acquire() async throws {
        refill()
        tokens -= 1
        if tokens >= 0 { return }
        // Reserve the token now (tokens may go negative) and sleep until it exists.
        let wait = -tokens / rate
        try await Task.sleep(for: .seconds(wait))
    }

    private func refill() {
        let now = ContinuousClock.now
        let elapsed = now - last
        last = now
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        tokens = min(burst, tokens + seconds * rate)
    }
}
