import EngageCore
import EngageStore
import Foundation

/// What one delivery pass did.
public struct DeliveryReport: Sendable {
    public var delivered = 0
    /// Attempts that failed and were scheduled again.
    public var retried = 0
    public var failed = 0
    public var rejected = 0
    /// Rows this pass sent whose lease another worker had taken by the time their result was
    /// recorded: the destination may have received them twice (0 unless a lease was lost).
    public var repeated = 0
    /// HTTP requests sent (a row with tags sends two).
    public var requests = 0
    public var seconds = 0.0
    /// Set when 401/403 stopped the pass.
    public var credentialsStatus: Int?

    public init() {}

    public var requestsPerSecond: Double { seconds > 0 ? Double(requests) / seconds : 0 }

    public var summary: String {
        String(format: "delivered %d, retried %d, failed %d, rejected %d, repeated %d; %d requests in %.1f s (%.0f/s)",
               delivered, retried, failed, rejected, repeated, requests, seconds, requestsPerSecond)
    }
}

/// Tuning of a delivery pass.
public struct DeliveryOptions: Sendable {
    /// The lease and request timeout every command and `serve` start from.
    public static let defaultLeaseSeconds = 120.0
    public static let defaultRequestTimeoutSeconds: Int64 = 30

    /// Rows claimed per lease.
    public var batchSize: Int
    /// How long a claim holds rows; after that a crashed worker's rows return. A live worker
    /// renews the lease of what it holds every quarter of it (``LeaseKeeper``).
    public var leaseSeconds: Double
    /// After the due rows are done, wait for rows scheduled for retry when the next one is
    /// due within this many seconds; 0 stops as soon as nothing is due.
    public var maxWaitSeconds: Double
    public var retry: RetryPolicy
    /// Bounds a whole request, the answer's body included.
    public var requestTimeoutSeconds: Int64
    public init(batchSize: Int = 1_000, leaseSeconds: Double = defaultLeaseSeconds, maxWaitSeconds: Double = 30,
                retry: RetryPolicy = RetryPolicy(), requestTimeoutSeconds: Int64 = defaultRequestTimeoutSeconds) {
        self.batchSize = batchSize
        self.leaseSeconds = leaseSeconds
        self.maxWaitSeconds = maxWaitSeconds
        self.retry = retry
        self.requestTimeoutSeconds = requestTimeoutSeconds
    }
}

extension DeliveryReport {
    mutating func add(_ counts: RecordedCounts) {
        delivered += counts.delivered
        retried += counts.retrying
        failed += counts.failed
        rejected += counts.rejected
        repeated += counts.repeated
    }
}
