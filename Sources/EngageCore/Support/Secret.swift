/// A secret — a destination's auth token, the webhook secret, the status page's token. Its
/// text is read only where it is used (``revealed``); `description`, `debugDescription`,
/// string interpolation and `dump` (so any dump of a configuration holding one) show
/// `<redacted>`.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let value: String

    public init(_ value: String) { self.value = value }

    /// Reads the environment variable `name`; nil when it is unset or empty.
    public init?(environment name: String, _ environment: [String: String]) {
        guard let value = environment[name], !value.isEmpty else { return nil }
        self.value = value
    }

    /// The text itself, for the one place that sends or compares it.
    public var revealed: String { value }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: []) }

    /// Whether `given` is this secret, in a time that does not depend on where they differ.
    public func matches(_ given: String) -> Bool {
        let a = Array(given.utf8), b = Array(value.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0 && !value.isEmpty
    }
}
