import Foundation

/// Keeps docs/scaling.md's plan honest: under Citus every table holding per-profile rows is
/// distributed by `profile_id` (colocated), so a statement joining two of them runs on each node
/// alone only when it equates their `profile_id`s. This reads the plans PostgreSQL chose for the
/// statements a workload ran (auto_explain, `log_format = json`, `log_verbose = on`) and lists
/// every join of two such relations that does not, as "engage.ledger.vero_id = engage.outbox.vero_id".
/// The few the design needs (the diff joins on the Vero id) are listed in docs/scaling.md with
/// how a distributed run would do them; any other one fails the test that runs this.
public enum ColocationCheck {
    /// A join of two per-profile relations on other columns than `profile_id`, both sides named
    /// `relation.column` and ordered, so one crossing reads the same from any statement.
    public struct Crossing: Hashable, Comparable, Sendable, CustomStringConvertible {
        public var left: String
        public var right: String

        public init(_ a: String, _ b: String) {
            (left, right) = a <= b ? (a, b) : (b, a)
        }

        public var description: String { "\(left) = \(right)" }
        public static func < (a: Crossing, b: Crossing) -> Bool { a.description < b.description }
    }

    /// One statement's crossings, with its text for the message.
    public struct Finding: Sendable {
        public var crossing: Crossing
        public var query: String
    }

    /// The tables of the schema that hold per-profile rows. Every temporary table counts too
    /// (the pipeline's scratch relations carry per-profile rows from one stage to the next).
    public static let perProfileTables: Set<String> = [
        "engage.profiles", "engage.events", "engage.memberships", "engage.membership_history", "engage.ledger", "engage.outbox",
    ]

    /// The module that logs plans; its parameters are known once it is loaded.
    public static let loggingModule = "auto_explain"

    /// The server settings that make every statement's plan reach the server's log, as JSON.
    public static let loggingSettings = [
        "session_preload_libraries": loggingModule,
        "auto_explain.log_min_duration": "0",
        "auto_explain.log_format": "json",
        "auto_explain.log_verbose": "on",
        "auto_explain.log_nested_statements": "on",
    ]

    // MARK: - Reading the log

    /// The plans auto_explain wrote to a server log (`LOG:  duration: … plan:` followed by the
    /// JSON, one tab-indented line each), with the backend pid of the session that ran each.
    public static func loggedPlans(_ log: String) -> [(pid: Int, plan: [String: Any])] {
        var plans: [(pid: Int, plan: [String: Any])] = []
        var pid: Int?
        var json: [Substring] = []
        func flush() {
            if let pid, !json.isEmpty,
               let object = try? JSONSerialization.jsonObject(with: Data(json.joined(separator: "\n").utf8)) as? [String: Any] {
                plans.append((pid, object))
            }
            pid = nil
            json = []
        }
        for line in log.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("\t") {
                if pid != nil { json.append(line) }
                continue
            }
            flush()
            if line.hasSuffix("plan:"), let open = line.firstIndex(of: "["), let close = line[open...].firstIndex(of: "]") {
                pid = Int(line[line.index(after: open)..<close])
            }
        }
        flush()
        return plans
    }

    // MARK: - Reading a plan

    /// The crossings of one logged plan (`{"Query Text": …, "Plan": …}`).
    public static func findings(in logged: [String: Any]) -> [Finding] {
        guard let plan = logged["Plan"] as? [String: Any] else { return [] }
        let query = logged["Query Text"] as? String ?? ""
        return crossings(inPlan: plan).map { Finding(crossing: $0, query: query) }
    }

    /// The crossings of a plan tree (`EXPLAIN (VERBOSE, FORMAT JSON)`'s `Plan`).
    public static func crossings(inPlan plan: [String: Any]) -> Set<Crossing> {
        var scope = Scope()
        scope.collect(plan)
        // Every equality between columns of two aliases, wherever the plan tests it (a hash or
        // merge key, a join filter, a parameterised index condition, a subplan's filter).
        var joined: [AliasPair: [(RelationColumn, RelationColumn)]] = [:]
        for condition in scope.conditions {
            for (a, b) in equalities(in: condition) + expressionEqualities(in: condition) where a.alias != b.alias {
                for ra in scope.resolve(a) where isPerProfile(ra.relation) {
                    for rb in scope.resolve(b) where isPerProfile(rb.relation) {
                        joined[AliasPair(a.alias, b.alias), default: []].append((ra, rb))
                    }
                }
            }
        }
        var found = Set<Crossing>()
        for equalities in joined.values where !equalities.contains(where: { $0.column == "profile_id" && $1.column == "profile_id" }) {
            for (a, b) in equalities {
                found.insert(Crossing("\(a.relation).\(a.column)", "\(b.relation).\(b.column)"))
            }
        }
        return found
    }

    static func isPerProfile(_ relation: String) -> Bool {
        perProfileTables.contains(relation) || relation.hasPrefix("pg_temp.")
    }

    /// `alias.column` as a condition spells it.
    struct ColumnRef: Hashable {
        var alias: String
        var column: String
    }

    /// A column of a relation (`schema.table`), what a ``ColumnRef`` stands for.
    struct RelationColumn: Hashable {
        var relation: String
        var column: String
    }

    struct AliasPair: Hashable {
        var a: String, b: String
        init(_ x: String, _ y: String) { (a, b) = x <= y ? (x, y) : (y, x) }
    }

    /// What a plan's aliases stand for: base relations by their scans, and the aliases of
    /// subqueries and CTEs by the outputs of the plan beneath them.
    struct Scope {
        var relations: [String: Set<String>] = [:]
        /// A subquery's or CTE's alias: the output expressions of the plan it reads, and the
        /// relations scanned beneath it.
        var derived: [String: [(inner: [String], relations: Set<String>)]] = [:]
        var ctes: [String: (outputs: [String], relations: Set<String>)] = [:]
        var cteScans: [(alias: String, cte: String)] = []
        var conditions: [String] = []

        static let conditionKeys = ["Hash Cond", "Merge Cond", "Join Filter", "Index Cond", "Recheck Cond", "Filter"]

        /// Walks the tree; returns the relations scanned in it.
        @discardableResult
        mutating func collect(_ node: [String: Any]) -> Set<String> {
            var scanned = Set<String>()
            if let name = node["Relation Name"] as? String, let schema = node["Schema"] as? String {
                let relation = "\(schema).\(name)"
                relations[node["Alias"] as? String ?? name, default: []].insert(relation)
                scanned.insert(relation)
            }
            for key in Self.conditionKeys {
                if let condition = node[key] as? String { conditions.append(condition) }
            }
            let children = node["Plans"] as? [[String: Any]] ?? []
            var childScans: [Set<String>] = []
            for child in children { childScans.append(collect(child)) }
            scanned.formUnion(childScans.reduce(into: Set<String>()) { $0.formUnion($1) })
            let outputs = node["Output"] as? [String] ?? []
            if let subplan = node["Subplan Name"] as? String, subplan.hasPrefix("CTE ") {
                ctes[String(subplan.dropFirst(4))] = (outputs, scanned)
            }
            switch node["Node Type"] as? String {
            case "Subquery Scan":
                if let alias = node["Alias"] as? String {
                    let inner = children.first?["Output"] as? [String] ?? []
                    derived[alias, default: []].append((inner, childScans.first ?? []))
                }
            case "CTE Scan":
                if let alias = node["Alias"] as? String, let cte = node["CTE Name"] as? String {
                    cteScans.append((alias, cte))
                }
            default: break
            }
            return scanned
        }

        /// The relation columns `ref` stands for: itself when its alias scans a relation; through
        /// a subquery or CTE, the plain column of that name beneath it, else the column's name
        /// in the one relation scanned beneath (an expression over one relation is still that
        /// relation's row).
        func resolve(_ ref: ColumnRef, depth: Int = 0) -> [RelationColumn] {
            if let scanned = relations[ref.alias] {
                return scanned.map { RelationColumn(relation: $0, column: ref.column) }
            }
            guard depth < 8 else { return [] }
            var layers = derived[ref.alias] ?? []
            for scan in cteScans where scan.alias == ref.alias {
                if let cte = ctes[scan.cte] { layers.append((cte.outputs, cte.relations)) }
            }
            var found: [RelationColumn] = []
            for layer in layers {
                // The scan may project a few of the columns beneath it: matched by name, not place.
                if let inner = layer.inner.compactMap(ColocationCheck.columnRef).first(where: { $0.column == ref.column }),
                   inner.alias != ref.alias {
                    found += resolve(inner, depth: depth + 1)
                } else if layer.relations.count == 1, let only = layer.relations.first {
                    found.append(RelationColumn(relation: only, column: ref.column))
                }
            }
            return found
        }
    }

    static let identifier = #"[A-Za-z_][A-Za-z0-9_]*"#
    /// `alias.column`, optionally parenthesised and cast (`(l.vero_id)::text`).
    static let operand = #"\(?(\#(identifier))\.(\#(identifier))\)?(?:::[a-z ]+)?"#
    static let equality = try! NSRegularExpression(pattern: operand + #"\s*=\s*"# + operand)

    static func equalities(in condition: String) -> [(ColumnRef, ColumnRef)] {
        let range = NSRange(condition.startIndex..., in: condition)
        return equality.matches(in: condition, range: range).compactMap { match in
            func group(_ i: Int) -> String? { Range(match.range(at: i), in: condition).map { String(condition[$0]) } }
            guard let a = group(1), let x = group(2), let b = group(3), let y = group(4) else { return nil }
            return (ColumnRef(alias: a, column: x), ColumnRef(alias: b, column: y))
        }
    }

    static let reference = try! NSRegularExpression(pattern: #"\b(\#(identifier))\.(\#(identifier))\b"#)

    /// Equalities between expressions over one alias each (`(m.profile_id || ''::text) =
    /// (r.profile_id || ''::text)`), which no distribution column can match: each side's columns
    /// come back named "expression over" the column, never plain `profile_id`. A plain
    /// `alias.column = alias.column` is left to ``equalities(in:)``.
    static func expressionEqualities(in condition: String) -> [(ColumnRef, ColumnRef)] {
        let text = Array(condition)
        var found: [(ColumnRef, ColumnRef)] = []
        for i in text.indices where text[i] == "=" && i > 0 && i + 1 < text.count
            && text[i - 1] == " " && text[i + 1] == " " {
            let left = String(text[operandBounds(text, from: i - 2, step: -1)])
            let right = String(text[operandBounds(text, from: i + 2, step: 1)])
            guard equalities(in: "\(left) = \(right)").isEmpty else { continue }
            let (l, r) = (references(in: left), references(in: right))
            guard Set(l.map(\.alias)).count == 1, Set(r.map(\.alias)).count == 1 else { continue }
            for a in l { for b in r { found.append((expression(a), expression(b))) } }
        }
        return found
    }

    static func references(in text: String) -> [ColumnRef] {
        reference.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            guard let a = Range(match.range(at: 1), in: text), let c = Range(match.range(at: 2), in: text) else { return nil }
            return ColumnRef(alias: String(text[a]), column: String(text[c]))
        }
    }

    static func expression(_ ref: ColumnRef) -> ColumnRef {
        ColumnRef(alias: ref.alias, column: "(expression over \(ref.column))")
    }

    /// The operand beside the "=" whose neighbouring character is at `from`: walking away from
    /// it (`step` -1 leftwards, +1 rightwards) over balanced parentheses, up to a space or an
    /// unmatched parenthesis at depth 0. Returns its bounds.
    static func operandBounds(_ text: [Character], from: Int, step: Int) -> Range<Int> {
        let (opening, closing): (Character, Character) = step < 0 ? (")", "(") : ("(", ")")
        var depth = 0, i = from
        while text.indices.contains(i) {
            let c = text[i]
            if c == opening { depth += 1 } else if c == closing { if depth == 0 { break }; depth -= 1 } else if c == " " && depth == 0 { break }
            i += step
        }
        return step < 0 ? (i + 1)..<(from + 1) : from..<i
    }

    static func columnRef(_ expression: String) -> ColumnRef? {
        let parts = expression.split(separator: ".")
        guard parts.count == 2, parts.allSatisfy({ $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } }) else { return nil }
        return ColumnRef(alias: String(parts[0]), column: String(parts[1]))
    }

    // MARK: - What the plan lists

    /// The crossings docs/scaling.md lists: the first cell of each row of its table of joins
    /// that leave a node, "`a.x = b.y`".
    public static func documented(in markdown: String) -> Set<Crossing> {
        var found = Set<Crossing>()
        for line in markdown.split(separator: "\n") where line.hasPrefix("| `") {
            let cell = line.dropFirst(3).prefix { $0 != "`" }
            let sides = cell.components(separatedBy: " = ")
            if sides.count == 2 { found.insert(Crossing(sides[0], sides[1])) }
        }
        return found
    }

    /// docs/scaling.md in this repository.
    public static func scalingDocument() throws -> String {
        try String(contentsOfFile: PrivateCluster.repository + "/docs/scaling.md", encoding: .utf8)
    }
}
