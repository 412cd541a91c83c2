import PostgresClient

/// How a run treats the ledger (docs/architecture.md#how-syncs-behave); `engage.sync_runs.mode`.
public enum RunMode: String, Sendable, CaseIterable, PostgresEncodable, PostgresDecodable {
    /// The first sync of a pair: every current member / value (the ledger is empty).
    case full
    /// Only what changed since the destination last confirmed.
    case incremental
    /// Every current member again, regardless of the ledger, plus exits for ledger-true leavers.
    case resync
    /// The definition was removed: exits for every ledger-true profile, nothing else.
    case remove
    /// Segment calls sent as they are (`engage-sync forward`), not a definition's run.
    case forward
}

/// How a run ended, or that it is still going; `engage.sync_runs.status`.
public enum RunStatus: String, Sendable, CaseIterable, PostgresEncodable, PostgresDecodable {
    case running, succeeded, partial, failed, blocked, skipped
}

/// The fate of an outbox row; `engage.outbox.status`.
public enum OutboxStatus: String, Sendable, CaseIterable, PostgresDecodable {
    /// Waiting to be sent (or retried).
    case pending
    /// Vero answered 2xx; the ledger holds its value.
    case delivered
    /// Vero refused it (4xx) or the attempts ran out.
    case failed
    /// The mapper refused the call; never sent.
    case rejected
    /// Never sent: the profile has no Vero id (`missing_user_id`).
    case skipped
    /// A later run wanted another value before this one was sent.
    case superseded
}

/// What an outbox row tells the destination; `engage.outbox.op`.
public enum OutboxOp: String, Sendable, CaseIterable, PostgresDecodable {
    /// An audience member (`true`).
    case enter
    /// No longer a member (`false`).
    case exit
    /// A trait's new value (its empty value when it has none any more).
    case change
    /// A Segment call from `engage-sync forward`.
    case forward
}

/// Counts a run records (docs/architecture.md#how-syncs-behave).
public struct RunCounts: Sendable, Equatable {
    public var members = 0
    public var entered = 0
    public var exited = 0
    public var changed = 0
    public var unchanged = 0
    public var skipped = 0
    public var superseded = 0
    public init() {}
}

/// The exit guardrail (docs/architecture.md#how-syncs-behave): an incremental run that would exit more than
/// `maxExitRatio` of an audience's delivered members, when there are at least
/// ``minimumMembers``, is blocked, so an emptied events table cannot exit everyone.
public struct Guardrail: Sendable {
    public static let minimumMembers = 100
    public var maxExitRatio: Double

    public init(maxExitRatio: Double) {
        self.maxExitRatio = maxExitRatio
    }

    /// How many confirmed members settle the verdict for `exited` exits: with at least this
    /// many the run may go on, so they need not be counted further.
    public func membersToCount(exited: Int) -> Int {
        max(Self.minimumMembers, Int((Double(exited) / max(maxExitRatio, 1e-9)).rounded(.up))) + 1
    }

    /// Why the run is blocked, or nil when it may go on.
    public func check(exited: Int, deliveredMembers: Int) -> String? {
        guard deliveredMembers >= Self.minimumMembers, Double(exited) > maxExitRatio * Double(deliveredMembers) else {
            return nil
        }
        return "guardrail: this run would exit \(exited) of \(deliveredMembers) delivered members (more than "
            + "\(Int((maxExitRatio * 100).rounded()))%); nothing was enqueued. If the exits are real, rerun with --force"
    }
}
