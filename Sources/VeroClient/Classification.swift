import Foundation

/// What a response (or its absence) means for the row that caused it (docs/architecture.md#how-syncs-behave).
public enum Classification: Sendable, Equatable {
    /// 2xx: delivered.
    case success
    /// Network error, timeout, 408, 429, 500, 502, 503, 504: try again later.
    case retryable
    /// 401/403: the credentials are wrong; stop sending to this destination at once.
    case credentials
    /// Any other 4xx (and unexpected statuses): failed for good, keeping the body.
    case permanent

    /// Classifies an HTTP status, or nil for a transport failure (no response at all).
    public static func classify(status: Int?) -> Classification {
        guard let status else { return .retryable }
        switch status {
        case 200..<300: return .success
        case 408, 429, 500, 502, 503, 504: return .retryable
        case 401, 403: return .credentials
        default: return .permanent
        }
    }
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP-date. Nil when absent or unreadable.
public func parseRetryAfter(_ value: String?, now: Date = Date()) -> Double? {
    guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
    if let seconds = Double(value), seconds >= 0, seconds.isFinite { return min(seconds, 3_600) }
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
    guard let date = formatter.date(from: value) else { return nil }
    return min(max(0, date.timeIntervalSince(now)), 3_600)
}
