import Foundation

/// An audience (is this profile a member?) or a computed trait (a value per profile),
/// as defined in JSON (docs/definitions.md). Build one with ``DefinitionParser``.
///
/// What a definition produces (``kind``) is kept apart from where it comes from (``source``):
/// everything after evaluation — snapshot, diff, outbox, ledger — depends only on the first.
public struct Definition: Sendable, Hashable {
    /// What the definition produces: a boolean membership, or a value per profile.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        case audience, trait
    }

    /// Where the result comes from.
    public enum Source: Sendable, Hashable {
        /// An audience's condition over profiles, traits, events and other audiences.
        case condition(Condition)
        /// A trait aggregated from events.
        case aggregate(TraitValue)
        /// The rows of the user's own query
        /// (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables): an audience's
        /// members, or a trait's
        /// values.
        case sql(SQLQuery)
    }

    public enum SendAs: String, Sendable, Hashable, Codable, CaseIterable { case identify, track, both }

    public var name: String
    public var key: String
    /// True when the JSON named the key; false when it came from ``Keys/key(forName:)``.
    public var keyIsExplicit: Bool
    public var kind: Kind
    public var description: String?
    public var source: Source
    public var syncEvery: SyncDuration
    /// How often an incremental snapshot is checked against a full evaluation
    /// (docs/architecture.md#incremental-evaluation).
    public var reconcileEvery: SyncDuration
    /// Destination names; nil means every enabled destination.
    public var destinations: [String]?
    public var sendAs: SendAs
    public var includeAnonymous: Bool
    public var enabled: Bool
    /// The JSON document as given (normalised), stored in `engage.computations.definition`.
    public var document: JSONValue

    /// Keys of the audiences this definition refers to, directly.
    public var referencedAudiences: [String] {
        switch source {
        case .condition(let condition): condition.referencedAudiences
        case .aggregate, .sql: []
        }
    }

    /// What a profile that leaves is told: `false` for an audience; for a trait, its
    /// aggregate's empty value (`0` or `null`), or `null` for a SQL trait.
    public var exitValue: JSONValue {
        switch source {
        case .condition: .bool(false)
        case .aggregate(let value): value.aggregate.emptyValue
        case .sql: kind == .audience ? .bool(false) : .null
        }
    }

    /// The SQL query, for a SQL definition.
    public var sqlQuery: SQLQuery? {
        if case .sql(let query) = source { return query }
        return nil
    }
}

/// A SQL definition's query (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables): one
/// SELECT over the user's own tables, run read-only
/// with a time limit.
public struct SQLQuery: Sendable, Hashable {
    /// The query as given.
    public var text: String
    /// `statement_timeout` for it, in seconds (the definition's `timeout`, default 10 minutes).
    public var timeoutSeconds: Int

    public static let defaultTimeoutSeconds = 600

    public init(text: String, timeoutSeconds: Int = Self.defaultTimeoutSeconds) {
        self.text = text
        self.timeoutSeconds = timeoutSeconds
    }

    /// The query without trailing whitespace and semicolons, ready to be wrapped as a subquery.
    public var body: String {
        var body = Substring(text)
        while let last = body.last, last.isWhitespace || last == ";" { body = body.dropLast() }
        return String(body)
    }
}

/// A property path: dots separate nesting levels, `\.` is a literal dot.
public struct PropertyPath: Sendable, Hashable, CustomStringConvertible {
    public var segments: [String]
    public var description: String {
        segments.map { $0.replacingOccurrences(of: ".", with: "\\.") }.joined(separator: ".")
    }

    /// Splits on unescaped dots; nil when a segment is empty.
    public init?(parsing text: String) {
        var segments: [String] = []
        var current = ""
        var escaping = false
        for ch in text {
            if escaping {
                current.append(ch)
                escaping = false
            } else if ch == "\\" {
                escaping = true
            } else if ch == "." {
                segments.append(current)
                current = ""
            } else {
                current.append(ch)
            }
        }
        if escaping { current.append("\\") }
        segments.append(current)
        guard !segments.contains(where: \.isEmpty) else { return nil }
        self.segments = segments
    }

    public init(segments: [String]) { self.segments = segments }
}

/// A boolean condition over a profile, its traits and its events.
public indirect enum Condition: Sendable, Hashable {
    /// The field that says which kind of condition an object is (`{"all": [...]}`).
    public enum Tag: String, Sendable, CaseIterable {
        case all, any, not, audience, event, trait
    }

    case all([Condition])
    case any([Condition])
    case not(Condition)
    case audience(String)
    case event(EventCondition)
    case trait(PropertyPath, Operator)

    public var referencedAudiences: [String] {
        switch self {
        case .all(let items), .any(let items): items.flatMap(\.referencedAudiences)
        case .not(let inner): inner.referencedAudiences
        case .audience(let key): [key]
        case .event, .trait: []
        }
    }
}

public struct EventCondition: Sendable, Hashable {
    public var event: String
    public var filters: [Filter]
    public var window: TimeWindow?
    public var count: CountRule
}

/// `within: d` (occurred_at >= now - d) or `between: [d1, d2]` (now - d1 <= occurred_at < now - d2).
public enum TimeWindow: Sendable, Hashable {
    case within(SyncDuration)
    case between(SyncDuration, SyncDuration)
}

public enum CountRule: Sendable, Hashable {
    case atLeast(Int), atMost(Int), exactly(Int)

    /// The rules' names in JSON (`{"at_least": 2}`).
    public enum Name: String, Sendable, CaseIterable {
        case atLeast = "at_least"
        case atMost = "at_most"
        case exactly
    }
}

/// `{"property": path, <operator>}` on event properties.
public struct Filter: Sendable, Hashable {
    public var path: PropertyPath
    public var op: Operator
}

/// A comparison on a JSON value found at a path.
public enum Operator: Sendable, Hashable {
    case equals(JSONValue)
    case notEquals(JSONValue)
    case gt(Double), gte(Double), lt(Double), lte(Double)
    case oneOf([JSONValue])
    case noneOf([JSONValue])
    case contains(String), notContains(String), startsWith(String), endsWith(String)
    case exists(Bool)
    case before(Timestamp), after(Timestamp)
    case withinLast(SyncDuration)

    /// The operators' names in JSON, in the order docs/definitions.md lists them.
    public enum Name: String, Sendable, CaseIterable {
        case equals
        case notEquals = "not_equals"
        case gt, gte, lt, lte
        case oneOf = "one_of"
        case noneOf = "none_of"
        case contains
        case notContains = "not_contains"
        case startsWith = "starts_with"
        case endsWith = "ends_with"
        case exists, before, after
        case withinLast = "within_last"
    }
}

/// How a computed trait's value is computed from events.
public struct TraitValue: Sendable, Hashable {
    public enum Aggregate: String, Sendable, Hashable, CaseIterable {
        case count, sum, avg, min, max, first, last
        case mostFrequent = "most_frequent"
        case uniqueList = "unique_list"
        case uniqueListCount = "unique_list_count"

        /// What a profile whose value was sent, and that now has no matching event, is told.
        public var emptyValue: JSONValue {
            switch self {
            case .count, .sum, .uniqueListCount: .int(0)
            default: .null
            }
        }
    }

    public var aggregate: Aggregate
    public var event: String
    public var property: PropertyPath?
    public var filters: [Filter]
    public var within: SyncDuration?
}
