import EngageCore
import Foundation
import PostgresClient

/// One SQL query and its bound parameters.
public struct CompiledQuery: Sendable {
    public var sql: String
    public var parameters: [any PostgresEncodable]
}

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
/// used with `#>`: no string from a definition is ever spliced into the SQL. `$1` is the
/// evaluation time, so windows are relative to one instant for the whole query.
public struct DefinitionCompiler {
    /// Audiences by key, for `{"audience": key}` references (inlined, recursively).
    public var audiences: [String: Definition]

    public init(audiences: [String: Definition]) {
        self.audiences = audiences
    }

    public func compile(_ definition: Definition, now: Date) throws -> CompiledQuery {
        var state = State(now: now)
        let sql: String
        switch definition.kind {
        case .audience:
            guard let condition = definition.condition else {
                throw CompileError(key: definition.key, reason: "an audience without a condition")
            }
            let predicate = try audiencePredicate(definition, condition, &state, stack: [definition.key])
            let ctes = state.ctes.isEmpty ? "" : "WITH " + state.ctes.joined(separator: ",\n") + "\n"
            let joins = state.joins.joined(separator: "\n")
            sql = """
                \(ctes)SELECT p.profile_id, true AS value, p.user_id, p.email
                FROM engage.profiles p
                \(joins)
                WHERE \(predicate)
                """
        case .trait:
            guard let value = definition.value else {
                throw CompileError(key: definition.key, reason: "a trait without a value")
            }
            sql = traitSQL(definition, value, &state)
        }
        return CompiledQuery(sql: sql, parameters: state.parameters)
    }

    // MARK: - Audiences

    private func audiencePredicate(_ definition: Definition, _ condition: Condition, _ state: inout State,
                                   stack: [String]) throws -> String {
        let body = try predicate(condition, &state, stack: stack)
        return "(\(eligibility(definition, alias: "p")) AND \(body))"
    }

    /// Which profiles a definition may include: by default those Vero can address
    /// (a user id or an email), as Engage does; with `include_anonymous`, all.
    private func eligibility(_ definition: Definition, alias: String) -> String {
        definition.includeAnonymous ? "TRUE" : "(\(alias).user_id IS NOT NULL OR \(alias).email IS NOT NULL)"
    }

    private func predicate(_ condition: Condition, _ state: inout State, stack: [String]) throws -> String {
        switch condition {
        case .all(let items):
            return "(" + (try items.map { try predicate($0, &state, stack: stack) }).joined(separator: " AND ") + ")"
        case .any(let items):
            return "(" + (try items.map { try predicate($0, &state, stack: stack) }).joined(separator: " OR ") + ")"
        case .not(let inner):
            return "(NOT \(try predicate(inner, &state, stack: stack)))"
        case .audience(let key):
            guard !stack.contains(key) else {
                throw CompileError(key: stack[0], reason: "audience cycle \((stack + [key]).joined(separator: " → "))")
            }
            guard let referenced = audiences[key], referenced.kind == .audience, let inner = referenced.condition else {
                throw CompileError(key: stack[0], reason: "unknown audience \(key.debugDescription)")
            }
            return try audiencePredicate(referenced, inner, &state, stack: stack + [key])
        case .trait(let path, let op):
            let jsonPath = state.bind(path.segments)
            return operatorSQL(op, value: "(p.traits #> \(jsonPath)::text[])", &state)
        case .event(let event):
            let name = "c\(state.ctes.count + 1)"
            var filters = ["e.event = \(state.bind(event.event))::text"]
            filters += windowSQL(event.window, &state)
            filters += event.filters.map { filterSQL($0, &state) }
            state.ctes.append("""
                \(name) AS (
                    SELECT e.profile_id, count(*) AS n
                    FROM engage.events e
                    WHERE \(filters.joined(separator: "\n      AND "))
                    GROUP BY e.profile_id)
                """)
            state.joins.append("LEFT JOIN \(name) ON \(name).profile_id = p.profile_id")
            let count = "coalesce(\(name).n, 0)"
            switch event.count {
            case .atLeast(let n): return "(\(count) >= \(state.bind(n)))"
            case .atMost(let n): return "(\(count) <= \(state.bind(n)))"
            case .exactly(let n): return "(\(count) = \(state.bind(n)))"
            }
        }
    }

    private func windowSQL(_ window: TimeWindow?, _ state: inout State) -> [String] {
        switch window {
        case nil:
            return []
        case .within(let d):
            return ["e.occurred_at >= $1::timestamptz - \(state.bind(d.intervalText))::interval"]
        case .between(let older, let newer):
            return ["e.occurred_at >= $1::timestamptz - \(state.bind(older.intervalText))::interval",
                    "e.occurred_at < $1::timestamptz - \(state.bind(newer.intervalText))::interval"]
        }
    }

    private func filterSQL(_ filter: Filter, _ state: inout State) -> String {
        let path = state.bind(filter.path.segments)
        return operatorSQL(filter.op, value: "(e.properties #> \(path)::text[])", &state)
    }

    // MARK: - Operators

    /// A two-valued predicate (never NULL, so `not` means "not a member") on the jsonb `value`.
    private func operatorSQL(_ op: Operator, value x: String, _ state: inout State) -> String {
        let present = "(\(x) IS NOT NULL AND \(x) <> 'null'::jsonb)"
        let text = "(\(x) #>> '{}')"
        func ifString(_ test: String) -> String {
            "(CASE WHEN jsonb_typeof(\(x)) = 'string' THEN coalesce(\(test), false) ELSE false END)"
        }
        func ifNumber(_ comparison: String, _ n: Double) -> String {
            "(CASE WHEN jsonb_typeof(\(x)) = 'number' THEN (\(x))::numeric \(comparison) \(state.bind(n))::numeric ELSE false END)"
        }
        func timestamp(_ comparison: String, _ bound: String) -> String {
            ifString("engage.try_timestamptz(\(text)) \(comparison) \(bound)")
        }
        switch op {
        case .equals(let v):
            return "coalesce(\(x) = \(state.bind(PostgresJSON(rawJSON: v.jsonString)))::jsonb, false)"
        case .notEquals(let v):
            return "(\(present) AND \(x) <> \(state.bind(PostgresJSON(rawJSON: v.jsonString)))::jsonb)"
        case .gt(let n): return ifNumber(">", n)
        case .gte(let n): return ifNumber(">=", n)
        case .lt(let n): return ifNumber("<", n)
        case .lte(let n): return ifNumber("<=", n)
        case .oneOf(let values):
            let list = state.bind(PostgresJSON(rawJSON: JSONValue.array(values).jsonString))
            return "coalesce(\(x) IN (SELECT jsonb_array_elements(\(list)::jsonb)), false)"
        case .noneOf(let values):
            let list = state.bind(PostgresJSON(rawJSON: JSONValue.array(values).jsonString))
            return "(\(present) AND coalesce(\(x) NOT IN (SELECT jsonb_array_elements(\(list)::jsonb)), false))"
        case .contains(let s):
            return ifString("strpos(\(text), \(state.bind(s))::text) > 0")
        case .notContains(let s):
            return ifString("strpos(\(text), \(state.bind(s))::text) = 0")
        case .startsWith(let s):
            return ifString("starts_with(\(text), \(state.bind(s))::text)")
        case .endsWith(let s):
            let p = state.bind(s)
            return ifString("right(\(text), char_length(\(p)::text)) = \(p)::text")
        case .exists(let wanted):
            return wanted ? present : "(NOT \(present))"
        case .before(let instant):
            return timestamp("<", "\(state.bind(instant))::timestamptz")
        case .after(let instant):
            return timestamp(">", "\(state.bind(instant))::timestamptz")
        case .withinLast(let d):
            let ts = "engage.try_timestamptz(\(text))"
            return ifString("(\(ts) >= $1::timestamptz - \(state.bind(d.intervalText))::interval AND \(ts) <= $1::timestamptz)")
        }
    }

    // MARK: - Traits

    private func traitSQL(_ definition: Definition, _ value: TraitValue, _ state: inout State) -> String {
        var filters = ["e.event = \(state.bind(value.event))::text", eligibility(definition, alias: "p")]
        filters += windowSQL(value.within.map { .within($0) }, &state)
        filters += value.filters.map { filterSQL($0, &state) }
        let x = value.property.map { "(e.properties #> \(state.bind($0.segments))::text[])" } ?? "NULL::jsonb"
        let matching = """
            matching AS (
                SELECT e.profile_id, p.user_id, p.email, e.occurred_at, e.message_id, \(x) AS x
                FROM engage.events e
                JOIN engage.profiles p ON p.profile_id = e.profile_id
                WHERE \(filters.joined(separator: "\n      AND ")))
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
        return "WITH \(matching)\n\(body)"
    }

    // MARK: - Parameters

    struct State {
        var parameters: [any PostgresEncodable]
        var ctes: [String] = []
        var joins: [String] = []

        init(now: Date) { parameters = [now] }

        /// Binds a value and returns its placeholder (`$n`).
        mutating func bind(_ value: any PostgresEncodable) -> String {
            parameters.append(value)
            return "$\(parameters.count)"
        }
    }
}
