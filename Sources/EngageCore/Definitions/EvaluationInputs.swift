/// What a definition's result depends on, with referenced audiences followed (they are
/// evaluated inline): which events it reads, which time windows move its result as the clock
/// moves, and whether anything moves with the clock in a way only a full evaluation follows.
/// The incremental evaluation's affected set is built from this (docs/architecture.md#incremental-evaluation).
public struct EvaluationInputs: Sendable, Hashable {
    /// A window over one event's `occurred_at`, relative to the evaluation instant.
    public struct Window: Sendable, Hashable {
        public var event: String
        public var window: TimeWindow
    }

    /// Names of the events the result reads.
    public var events: Set<String> = []
    /// Every window; as the clock moves from T0 to T1, a profile with a matching event whose
    /// time crossed an edge of one of them may change.
    public var windows: Set<Window> = []
    /// A `within_last` filter (on a trait or an event property) moves with the clock over
    /// values no index finds: such a definition is evaluated in full.
    public var movesWithClockUnindexed = false
    /// The result reads what no change log follows: the definition is a SQL query over the
    /// user's own tables, or refers to a SQL audience (whose snapshot it reads). Such a
    /// definition is evaluated in full; this says why.
    public var untracked: String?

    public init() {}

    /// The inputs of `definition`; `audiences` resolves `{"audience": key}` references (an
    /// unknown one contributes nothing: validation refuses it before this is asked).
    public init(_ definition: Definition, audiences: [String: Definition]) {
        switch definition.source {
        case .condition(let condition):
            add(condition, audiences: audiences, visiting: [definition.key])
        case .sql:
            untracked = "SQL definitions are evaluated in full"
        case .aggregate(let value):
            events.insert(value.event)
            if let within = value.within { windows.insert(Window(event: value.event, window: .within(within))) }
            for filter in value.filters { add(filter.op) }
        }
    }

    private mutating func add(_ condition: Condition, audiences: [String: Definition], visiting: Set<String>) {
        switch condition {
        case .all(let items), .any(let items):
            for item in items { add(item, audiences: audiences, visiting: visiting) }
        case .not(let inner):
            add(inner, audiences: audiences, visiting: visiting)
        case .audience(let key):
            guard !visiting.contains(key) else { return }
            switch audiences[key]?.source {
            case .condition(let inner)?: add(inner, audiences: audiences, visiting: visiting.union([key]))
            case .sql?: untracked = untracked ?? "it reads the snapshot of the SQL audience \(key)"
            default: return
            }
        case .event(let event):
            events.insert(event.event)
            if let window = event.window { windows.insert(Window(event: event.event, window: window)) }
            for filter in event.filters { add(filter.op) }
        case .trait(_, let op):
            add(op)
        }
    }

    private mutating func add(_ op: Operator) {
        if case .withinLast = op { movesWithClockUnindexed = true }
    }
}
