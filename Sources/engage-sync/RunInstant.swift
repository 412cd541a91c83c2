import EngageCore
import Foundation

/// The instant a command evaluates at: `ENGAGE_SYNC_NOW` (ISO-8601) when set — tests and demos
/// move time with it instead of rewriting data — else the machine's clock. One instant per
/// command: every window of every definition in a run is relative to it.
enum RunInstant {
    /// An instant that does not parse.
    struct Invalid: UserError, CustomStringConvertible {
        var source: String
        var text: String
        var description: String {
            "\(source) must be an ISO-8601 instant such as 2026-11-29T12:00:00Z, got \(text.prefix(60).debugDescription)"
        }
    }

    static func now() throws -> Date {
        guard let text = ProcessInfo.processInfo.environment["ENGAGE_SYNC_NOW"], !text.isEmpty else { return Date() }
        return try parse(text, from: "ENGAGE_SYNC_NOW")
    }

    static func parse(_ text: String, from source: String) throws -> Date {
        guard let instant = Timestamp.parse(text) else { throw Invalid(source: source, text: text) }
        return instant.date
    }
}
