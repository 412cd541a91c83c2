import Synchronization

/// A count that tasks and callbacks share.
public final class Counter: Sendable {
    private let box = Mutex(0)

    public init() {}

    /// The count now.
    public var value: Int { box.withLock { $0 } }

    /// Adds one; returns the new count.
    @discardableResult
    public func next() -> Int { box.withLock { $0 += 1; return $0 } }
}
