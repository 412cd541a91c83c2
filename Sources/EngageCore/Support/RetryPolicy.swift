/// Exponential backoff with full jitter (docs/architecture.md#how-syncs-behave): attempt n waits a random time in
/// `[0, min(cap, base · 2^(n-1))]`, or at least the server's `Retry-After`.
public struct RetryPolicy: Sendable, Hashable {
    public var baseSeconds: Double
    public var capSeconds: Double

    public init(baseSeconds: Double = 1, capSeconds: Double = 300) {
        self.baseSeconds = baseSeconds
        self.capSeconds = capSeconds
    }

    /// The longest wait before attempt number `attempt + 1`, after `attempt` failures.
    public func ceiling(afterAttempt attempt: Int) -> Double {
        let exponent = Double(max(0, min(attempt - 1, 30)))
        return min(capSeconds, baseSeconds * pow2(exponent))
    }

    /// The delay before the next attempt; `retryAfter` (seconds) from the server is a floor.
    public func delay(afterAttempt attempt: Int, retryAfter: Double? = nil,
                      random: (Double) -> Double = { Double.random(in: 0...$0) }) -> Double {
        let jittered = random(ceiling(afterAttempt: attempt))
        guard let retryAfter else { return jittered }
        return max(retryAfter, jittered)
    }

    private func pow2(_ e: Double) -> Double {
        var result = 1.0
        for _ in 0..<Int(e) { result *= 2 }
        return result
    }
}
