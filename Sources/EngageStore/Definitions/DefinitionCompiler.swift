import EngageCore
import Foundation
import PostgresClient

/// An audience referred to by key that the compiler cannot resolve (validation normally
/// catches this before anything is compiled).
public struct CompileError: Error, Sendable, CustomStringConvertible {
    public var key: String
    public var reason: String
    public var description: String { "cannot compile \(key): \(reason)" }
}

/// Compiles a definition into one query returning `(profile_id text, value, user_id text,
/// email text)`: `value` is boolean `true` for each audience member, or the computed `jsonb`
/// value for a trait; `user_id` and `email` are the profile's, read in the same pass, so the
/// diff knows which Vero user each row is about without reading the profiles again.
///
/// Every literal from the definition is a bound parameter and every path a bound `text[]`
/// used with `#>` (the query is a ``PostgresQuery``): no string from a definition is ever
/// spliced into the SQL. Every window is relative to one instant, `now`, for the whole query.
public struct DefinitionCompiler {
    /// Audiences by key, for `{"audience": key}` references (inlined, recursively).
    public var audiences: [String: Definition]

    public init(audiences: [String: Definition]) {
        self.audiences = audiences
    }

    /// The query for every profile: rows of `(profile_id, value, user_id, email)`.
    public func compile(_ definition: Definition, now: Date) throws -> PostgresQuery {
        try compile(definition, now: now, scope: nil)
    }

    /// The query for the profiles of `scope` only (nil: every profile): every scan of profiles
    /// and events is semi-joined with it, so the cost follows the scope's size (incremental
    /// evaluation). `sources` are the relations profiles and events are read from: the tables,
    /// or a run's shared copy (``SharedChanges``).
    func compile(_ definition: Definition, now: Date, scope: ScratchTable?, sources: Sources = Sources()) throws -> PostgresQuery {
        var state = State(now: now, scope: scope)
        state.sources = sources
        switch definition.source {
        case .condition(let condition):
            let predicate = try audiencePredicate(definition, condition, &state, stack: [definition.key], required: true)
            let ctes: PostgresQuery = state.ctes.isEmpty ? "" : "WITH \(PostgresQuery.joined(state.ctes, separator: ",\n"))\n"
            return """
                \(ctes)SELECT p.profile_id, true AS value, p.user_id, p.email
                FROM \(state.sources.profiles) p
                \(PostgresQuery.joined(state.joins, separator: "\n"))
                WHERE \(predicate)\(unescaped: state.scoped("p"))
                """
        case .aggregate(let value):
            return traitQuery(definition, value, &state)
        case .sql:
            // The query's rows, matched to profiles, are in ``ScratchTable/sqlResult``
            // (``SQLSource``): every SQL evaluation is full, so a scope never applies.
            let value: PostgresQuery = definition.kind == .audience ? "true" : "r.value"
            return """
                SELECT r.profile_id, \(value) AS value, r.user_id, r.email FROM \(ScratchTable.sqlResult) r
                WHERE r.profile_id IS NOT NULL AND \(unescaped: eligibility(definition, alias: "r"))
                """
        }
    }

    // MARK: - Audiences

    private func audiencePredicate(_ definition: Definition, _ condition: Condition, _ state: inout State,
                                   stack: [String], required: Bool) throws -> PostgresQuery {
        let body = try predicate(condition, &state, stack: stack, required: required)
        return "(\(unescaped: eligibility(definition, alias: "p")) AND \(body))"
    }

    /// Which profiles a definition may include: by default those Vero can address
    /// (a user id or an email), as Engage does; with `include_anonymous`, all.
    private func eligibility(_ definition: Definition, alias: String) -> String {
        definition.includeAnonymous ? "TRUE" : "(\(alias).user_id IS NOT NULL OR \(alias).email IS NOT NULL)"
    }

    /// `required`: every member satisfies this condition (it is the definition's condition,
    /// or a part of it joined only by `all` and audience references), so an event condition
    /// that needs a matching event can join its counts instead of left-joining them: profiles
    /// without such an event are then never read (in the benchmark's incremental run of an
    /// `at_least 1` audience, half of the affected profiles).
    private func predicate(_ condition: Condition, _ state: inout State, stack: [String], required: Bool) throws -> PostgresQuery {
        switch condition {
        case .all(let items):
            return "(\(PostgresQuery.joined(try items.map { try predicate($0, &state, stack: stack, required: required) }, separator: " AND ")))"
        case .any(let items):
            return "(\(PostgresQuery.joined(try items.map { try predicate($0, &state, stack: stack, required: false) }, separator: " OR ")))"
        case .not(let inner):
            return "(NOT \(try predicate(inner, &state, stack: stack, required: false)))"
        case .audience(let key):
            guard !stack.contains(key) else {
                throw CompileError(key: stack[0], reason: "audience cycle \((stack + [key]).joined(separator: " → "))")
            }
            guard let referenced = audiences[key] else {
                throw CompileError(key: stack[0], reason: "unknown audience \(key.debugDescription)")
            }
            switch referenced.source {
            case .condition(let inner):
                return try audiencePredicate(referenced, inner, &state, stack: stack + [key], required: required)
            case .sql:
                // A SQL audience is not inlined: its members are its snapshot, as its last run left it.
                return """
                    EXISTS (SELECT 1 FROM engage.memberships m
                            WHERE m.computation_id = (SELECT id FROM engage.computations WHERE key = \(key)::text)
                              AND m.profile_id = p.profile_id)
                    """
            case .aggregate:
                throw CompileError(key: stack[0], reason: "\(key.debugDescription) is a trait, not an audience")
            }
        case .trait(let path, let op):
            return operatorSQL(op, value: "(p.traits #> \(path.segments)::text[])", state)
        case .event(let event):
            let name = "c\(state.ctes.count + 1)"
            var filters: [PostgresQuery] = ["e.event = \(event.event)::text"]
            filters += windowSQL(event.window, state)
            filters += event.filters.map { filterSQL($0, state) }
            state.ctes.append("""
                \(unescaped: name) AS (
                    SELECT e.profile_id, count(*) AS n
                    FROM \(state.sources.events) e
                    WHERE \(PostgresQuery.joined(filters, separator: "\n      AND "))\(unescaped: state.scoped("e"))
                    GROUP BY e.profile_id)
                """)
            let needsAnEvent: Bool
            switch event.count {
            case .atLeast(let n), .exactly(let n): needsAnEvent = n >= 1
            case .atMost: needsAnEvent = false
            }
            let join = required && needsAnEvent ? "JOIN" : "LEFT JOIN"
            state.joins.append("\(unescaped: join) \(unescaped: name) ON \(unescaped: name).profile_id = p.profile_id")
            let count = "coalesce(\(name).n, 0)"
            switch event.count {
            case .atLeast(let n): return "(\(unescaped: count) >= \(n))"
            case .atMost(let n): return "(\(unescaped: count) <= \(n))"
            case .exactly(let n): return "(\(unescaped: count) = \(n))"
            }
        }
    }

    private func windowSQL(_ window: TimeWindow?, _ state: State) -> [PostgresQuery] {
        switch window {
        case nil:
            return []
        case .within(let d):
            return ["e.occurred_at >= \(state.now)::timestamptz - \(d.intervalText)::interval"]
        case .between(let older, let newer):
            return ["e.occurred_at >= \(state.now)::timestamptz - \(older.intervalText)::interval",
                    "e.occurred_at < \(state.now)::timestamptz - \(newer.intervalText)::interval"]
        }
    }

    private func filterSQL(_ filter: Filter, _ state: State) -> PostgresQuery {
        operatorSQL(filter.op, value: "(e.properties #> \(filter.path.segments)::text[])", state)
    }

    // MARK: - Operators

    /// A two-valued predicate (never NULL, so `not` means "not a member") on the jsonb value `x`.
    private func operatorSQL(_ op: Operator, value x: PostgresQuery, _ state: State) -> PostgresQuery {
        let present: PostgresQuery = "(\(x) IS NOT NULL AND \(x) <> 'null'::jsonb)"
        let text: PostgresQuery = "(\(x) #>> '{}')"
        func ifString(_ test: PostgresQuery) -> PostgresQuery {
            "(CASE WHEN jsonb_typeof(\(x)) = 'string' THEN coalesce(\(test), false) ELSE false END)"
        }
        func ifNumber(_ comparison: String, _ n: Double) -> PostgresQuery {
            "(CASE WHEN jsonb_typeof(\(x)) = 'number' THEN (\(x))::numeric \(unescaped: comparison) \(n)::numeric ELSE false END)"
        }
        func timestamp(_ comparison: String, _ bound: Timestamp) -> PostgresQuery {
            ifString("engage.try_timestamptz(\(text)) \(unescaped: comparison) \(bound)::timestamptz")
        }
        func json(_ value: JSONValue) -> PostgresJSON { PostgresJSON(rawJSON: value.jsonString) }
        switch op {
        case .equals(let v):
            return "coalesce(\(x) = \(json(v))::jsonb, false)"
        case .notEquals(let v):
            return "(\(present) AND \(x) <> \(json(v))::jsonb)"
        case .gt(let n): return ifNumber(">", n)
        case .gte(let n): return ifNumber(">=", n)
        case .lt(let n): return ifNumber("<", n)
        case .lte(let n): return ifNumber("<=", n)
        case .oneOf(let values):
            return "coalesce(\(x) IN (SELECT jsonb_array_elements(\(json(.array(values)))::jsonb)), false)"
        case .noneOf(let values):
            return "(\(present) AND coalesce(\(x) NOT IN (SELECT jsonb_array_elements(\(json(.array(values)))::jsonb)), false))"
        case .contains(let s):
            return ifString("strpos(\(text), \(s)::text) > 0")
        case .notContains(let s):
            return ifString("strpos(\(text), \(s)::text) = 0")
        case .startsWith(let s):
            return ifString("starts_with(\(text), \(s)::text)")
        case .endsWith(let s):
            return ifString("right(\(text), char_length(\(s)::text)) = \(s)::text")
        case .exists(let wanted):
            return wanted ? present : "(NOT \(present))"
        case .before(let instant):
            return timestamp("<", instant)
        case .after(let instant):
            return timestamp(">", instant)
        case .withinLast(let d):
            let ts: PostgresQuery = "engage.try_timestamptz(\(text))"
            return ifString("(\(ts) >= \(state.now)::timestamptz - \(d.intervalText)::interval AND \(ts) <= \(state.now)::timestamptz)")
        }
    }

    // MARK: - Traits

    private func traitQuery(_ definition: Definition, _ value: TraitValue, _ state: inout State) -> PostgresQuery {
        var filters: [PostgresQuery] = ["e.event = \(value.event)::text", "\(unescaped: eligibility(definition, alias: "p"))"]
        filters += windowSQL(value.within.map { .within($0) }, state)
        filters += value.filters.map { filterSQL($0, state) }
        let x: PostgresQuery = value.property.map { "(e.properties #> \($0.segments)::text[])" } ?? "NULL::jsonb"
        let matching: PostgresQuery = """
            matching AS (
                SELECT e.profile_id, p.user_id, p.email, e.occurred_at, e.message_id, \(x) AS x
                FROM \(state.sources.events) e
                JOIN \(state.sources.profiles) p ON p.profile_id = e.profile_id
                WHERE \(PostgresQuery.joined(filters, separator: "\n      AND "))\(unescaped: state.scoped("e")))
            """
        let present = "x IS NOT NULL AND x <> 'null'::jsonb"
        let numeric = "jsonb_typeof(x) = 'number'"
        // The profile's ids ride along with its key (they depend on it), so grouping by all
        // three groups by profile.
        let who = "profile_id, user_id, email"
        let body: String
        switch value.aggregate {
        case .count:
            body = "SELECT \(who), to_jsonb(count(*)) AS value FROM matching GROUP BY \(who)"
        case .sum:
            body = "SELECT \(who), to_jsonb(trim_scale(sum(x::numeric))) AS value FROM matching WHERE \(numeric) GROUP BY \(who)"
        case .avg:
            body = "SELECT \(who), to_jsonb(trim_scale(round(avg(x::numeric), 6))) AS value FROM matching WHERE \(numeric) GROUP BY \(who)"
        case .min:
            body = "SELECT \(who), to_jsonb(trim_scale(min(x::numeric))) AS value FROM matching WHERE \(numeric) GROUP BY \(who)"
        case .max:
            body = "SELECT \(who), to_jsonb(trim_scale(max(x::numeric))) AS value FROM matching WHERE \(numeric) GROUP BY \(who)"
        case .first:
            body = "SELECT \(who), (array_agg(x ORDER BY occurred_at, message_id))[1] AS value FROM matching WHERE \(present) GROUP BY \(who)"
        case .last:
            body = "SELECT \(who), (array_agg(x ORDER BY occurred_at DESC, message_id DESC))[1] AS value FROM matching WHERE \(present) GROUP BY \(who)"
        case .mostFrequent:
            // Seen at least twice; ties broken alphabetically (by code point).
            body = """
                SELECT DISTINCT ON (profile_id) \(who), x AS value
                FROM (SELECT \(who), x, count(*) AS seen FROM matching WHERE \(present)
                      GROUP BY \(who), x HAVING count(*) >= 2) counted
                ORDER BY profile_id, seen DESC, (x #>> '{}') COLLATE "C"
                """
        case .uniqueList:
            body = """
                SELECT \(who), jsonb_agg(x ORDER BY (x #>> '{}') COLLATE "C") AS value
                FROM (SELECT DISTINCT \(who), x FROM matching WHERE \(present)) distinct_values
                GROUP BY \(who)
                """
        case .uniqueListCount:
            body = "SELECT \(who), to_jsonb(count(DISTINCT x)) AS value FROM matching WHERE \(present) GROUP BY \(who)"
        }
        return "WITH \(matching)\n\(unescaped: body)"
    }

    // MARK: - State

    /// The relations a compiled query reads profiles and events from, each with the columns it
    /// reads of the table (profiles: `profile_id`, `user_id`, `email`, `traits`; events:
    /// `message_id`, `profile_id`, `event`, `properties`, `occurred_at`).
    struct Sources: Sendable {
        var profiles: PostgresQuery = "engage.profiles"
        var events: PostgresQuery = "engage.events"
    }

    struct State {
        /// The instant every window is relative to.
        var now: Date
        /// The profiles the query is restricted to, or nil for every profile.
        var scope: ScratchTable?
        /// Where profiles and events are read from.
        var sources = Sources()
        var ctes: [PostgresQuery] = []
        var joins: [PostgresQuery] = []

        init(now: Date, scope: ScratchTable?) {
            self.now = now
            self.scope = scope
        }

        /// ` AND alias.profile_id IN (…scope…)`, or nothing without a scope.
        func scoped(_ alias: String) -> String {
            scope.map { "\n      AND \(alias).profile_id IN (SELECT profile_id FROM \($0))" } ?? ""
        }
    }
}
