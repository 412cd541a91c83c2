import Foundation
import Testing

/// Polls until `condition` holds, recording an issue naming `what` if it never does (a bounded
/// wait, not a timing assertion).
public func eventually(seconds: Double = 300, every interval: Duration = .milliseconds(200), _ what: String,
                _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    Issue.record("timed out waiting for \(what)")
}
