import Foundation

/// One problem found in a definition: where (a JSON path) and why.
public struct ValidationIssue: Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { path.isEmpty ? reason : "\(path): \(reason)" }

    /// Joins where a definition sits (`defs.json`, `defs.json:[2]`, `[2]`, or empty) and a JSON
    /// path inside it (`condition.all[0]`): `defs.json:condition.all[0]`, `defs.json:[2].key`.
    public static func join(_ location: String, _ path: String) -> String {
        if location.isEmpty { return path }
        if path.isEmpty { return location }
        return location.hasSuffix("]") ? "\(location).\(path)" : "\(location):\(path)"
    }
}

/// A definition was rejected; carries every problem found, not just the first.
public struct DefinitionValidationError: Error, Sendable, CustomStringConvertible {
    /// Where the definitions came from (a file name), when known.
    public var source: String?
    public var issues: [ValidationIssue]

    public init(source: String? = nil, issues: [ValidationIssue]) {
        self.source = source
        self.issues = issues
    }

    public var description: String {
        let prefix = source.map { "\($0): " } ?? ""
        let header = "\(prefix)\(issues.count) problem\(issues.count == 1 ? "" : "s") in the definition\(issues.count == 1 ? "" : "s")"
        return ([header] + issues.map { "  \(prefix)\($0)" }).joined(separator: "\n")
    }
}

/// Decodes and validates definition JSON (docs/definitions.md), collecting every problem with its path.
public struct DefinitionParser {
    /// Conditions may nest this deep; deeper is rejected (and never overflows the stack).
    public static let maxDepth = 32

    private var issues: [ValidationIssue] = []

    /// Parses one definition object. `path` prefixes every issue (e.g. `[2]` for an array item).
    public static func parse(_ json: JSONValue, path: String = "") -> Result<Definition, DefinitionValidationError> {
        var parser = DefinitionParser()
        parser.refuseNUL(json, path)
        let definition = parser.definition(json, path)
        if let definition, parser.issues.isEmpty { return .success(definition) }
        return .failure(DefinitionValidationError(issues: parser.issues))
    }

    /// Parses a file's content: one definition object or an array of them. Fails with every
    /// problem of every definition.
    public static func parseDocument(_ data: Data, source: String? = nil) -> Result<[Definition], DefinitionValidationError> {
        let json: JSONValue
        let duplicates: [String]
        do {
            (json, duplicates) = try JSONValue.parseReportingDuplicates(data)
        } catch {
            return .failure(DefinitionValidationError(source: source, issues: [ValidationIssue(path: "", reason: "\(error)")]))
        }
        let items: [(JSONValue, String)]
        if case .array(let array) = json {
            items = array.enumerated().map { ($1, "[\($0)]") }
        } else {
            items = [(json, "")]
        }
        var definitions: [Definition] = []
        var issues = duplicates.map {
            ValidationIssue(path: $0, reason: "appears twice in the same object; only one may be given (a JSON reader would silently keep the last)")
        }
        for (item, path) in items {
            switch parse(item, path: path) {
            case .success(let d): definitions.append(d)
            case .failure(let e): issues += e.issues
            }
        }
        if items.isEmpty { issues.append(ValidationIssue(path: "", reason: "the file holds an empty array: no definitions")) }
        return issues.isEmpty ? .success(definitions) : .failure(DefinitionValidationError(source: source, issues: issues))
    }

    /// The longest duration a definition may name (a window, `sync_every`, `reconcile_every`):
    /// 100 years. Longer windows reach instants PostgreSQL cannot represent.
    public static let maxDurationSeconds = 36_500 * 86_400
    /// The longest `timeout` of a SQL definition: 24 hours.
    public static let maxTimeoutSeconds = 86_400

    /// PostgreSQL's text cannot hold NUL (`\u0000`): refuse it in any string or member name of
    /// the document, with its path, before anything is stored.
    private mutating func refuseNUL(_ json: JSONValue, _ path: String) {
        switch json {
        case .string(let text) where text.utf8.contains(0):
            add(path, "must not contain the NUL character (\\u0000)")
        case .array(let items):
            for (i, item) in items.enumerated() { refuseNUL(item, "\(path)[\(i)]") }
        case .object(let members):
            for (name, value) in members {
                if name.utf8.contains(0) { add(path, "has a member name containing the NUL character (\\u0000)") }
                refuseNUL(value, join(path, name))
            }
        default:
            break
        }
    }

    // MARK: - Top level

    /// The fields of a definition object.
    enum Field: String, CaseIterable {
        case name, key, type, description, condition, value, sql, timeout
        case syncEvery = "sync_every"
        case reconcileEvery = "reconcile_every"
        case destinations
        case sendAs = "send_as"
        case includeAnonymous = "include_anonymous"
        case enabled
    }

    private mutating func definition(_ json: JSONValue, _ path: String) -> Definition? {
        guard let object = object(json, path) else { return nil }
        unknownFields(object, allowed: Set(Field.allCases.map(\.rawValue)), path)

        let name = string(object, "name", path, required: true, maxLength: 255)
        if let name, name.trimmingCharacters(in: .whitespaces).isEmpty {
            add(join(path, "name"), "must not be blank")
        }
        var key: String?
        var keyIsExplicit = false
        if let explicit = string(object, "key", path, required: false, maxLength: nil) {
            keyIsExplicit = true
            if let problem = Keys.problem(with: explicit) { add(join(path, "key"), problem) } else { key = explicit }
        } else if let name {
            if let derived = Keys.key(forName: name) {
                if let problem = Keys.problem(with: derived) {
                    add(join(path, "name"), "gives the key \(derived.debugDescription), which is not allowed (\(problem)); set an explicit \"key\"")
                } else {
                    key = derived
                }
            } else {
                add(join(path, "name"), "gives an empty key (no letters or digits); set an explicit \"key\"")
            }
        }

        var kind: Definition.Kind?
        if let type = string(object, "type", path, required: true, maxLength: nil) {
            kind = Definition.Kind(rawValue: type)
            if kind == nil { add(join(path, "type"), "must be \"audience\" or \"trait\", got \(type.debugDescription)") }
        }
        let description = string(object, "description", path, required: false, maxLength: 10_000)

        var source: Definition.Source?
        let sql = self.sqlQuery(object, path)
        switch kind {
        case .audience:
            if let c = object["condition"] {
                source = self.condition(c, join(path, "condition"), depth: 1).map { .condition($0) }
                if object["sql"] != nil { add(join(path, "sql"), "replaces \"condition\"; give one of them, not both") }
            } else if object["sql"] != nil {
                source = sql.map { .sql($0) }
            } else {
                add(join(path, "condition"), "is required for an audience (or \"sql\": a query returning its members)")
            }
            if object["value"] != nil { add(join(path, "value"), "is for traits; an audience has a \"condition\"") }
        case .trait:
            if let v = object["value"] {
                source = traitValue(v, join(path, "value")).map { .aggregate($0) }
                if object["sql"] != nil { add(join(path, "sql"), "replaces \"value\"; give one of them, not both") }
            } else if object["sql"] != nil {
                source = sql.map { .sql($0) }
            } else {
                add(join(path, "value"), "is required for a trait (or \"sql\": a query returning each profile's value)")
            }
            if object["condition"] != nil { add(join(path, "condition"), "is for audiences; a trait has a \"value\"") }
        case nil:
            break
        }

        var syncEvery = SyncDuration(amount: 1, unit: .hours)
        if let raw = object["sync_every"] { syncEvery = duration(raw, join(path, "sync_every")) ?? syncEvery }
        var reconcileEvery = SyncDuration(amount: 24, unit: .hours)
        if let raw = object[Field.reconcileEvery.rawValue] {
            reconcileEvery = duration(raw, join(path, Field.reconcileEvery.rawValue)) ?? reconcileEvery
        }

        var destinations: [String]?
        if let raw = object["destinations"] {
            if let array = raw.arrayValue {
                destinations = []
                for (i, item) in array.enumerated() {
                    if let s = item.stringValue, !s.isEmpty { destinations?.append(s) }
                    else { add("\(join(path, "destinations"))[\(i)]", "must be a destination name (a non-empty string), got \(describe(item))") }
                }
            } else {
                add(join(path, "destinations"), "must be an array of destination names, got \(describe(raw))")
            }
        }

        var sendAs = Definition.SendAs.identify
        if let raw = string(object, "send_as", path, required: false, maxLength: nil) {
            if let parsed = Definition.SendAs(rawValue: raw) {
                sendAs = parsed
                if kind == .trait, parsed != .identify { add(join(path, "send_as"), "traits are always sent as identify calls") }
            } else {
                add(join(path, "send_as"), "must be \"identify\", \"track\" or \"both\", got \(raw.debugDescription)")
            }
        }
        let includeAnonymous = bool(object, "include_anonymous", path) ?? false
        let enabled = bool(object, "enabled", path) ?? true

        guard let name, let key, let kind, let source else { return nil }
        var document = object
        document["key"] = .string(key)
        return Definition(name: name, key: key, keyIsExplicit: keyIsExplicit, kind: kind, description: description,
                          source: source, syncEvery: syncEvery, reconcileEvery: reconcileEvery, destinations: destinations,
                          sendAs: sendAs, includeAnonymous: includeAnonymous, enabled: enabled,
                          document: .object(document))
    }

    // MARK: - SQL

    /// `sql` and its `timeout`; nil (with the problems added) when absent or malformed. The
    /// query itself is checked in the database by `define`
    /// (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables).
    private mutating func sqlQuery(_ object: [String: JSONValue], _ path: String) -> SQLQuery? {
        var timeout = SQLQuery.defaultTimeoutSeconds
        if let raw = object["timeout"] {
            if object["sql"] == nil {
                add(join(path, "timeout"), "is the time limit of a \"sql\" query; this definition has none")
            } else if let text = raw.stringValue, let seconds = Self.timeoutSeconds(text) {
                if seconds > Self.maxTimeoutSeconds {
                    add(join(path, "timeout"), "must be at most 24 hours (\"24h\"), got \(describe(raw))")
                }
                timeout = seconds
            } else {
                add(join(path, "timeout"), "must be a duration like \"30s\", \"10m\" or \"1h\" (a positive whole number and a unit s, m, h, d, w), got \(describe(raw))")
            }
        }
        guard object["sql"] != nil, let text = string(object, "sql", path, required: true, maxLength: 100_000) else { return nil }
        if SQLQuery(text: text).body.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            add(join(path, "sql"), "must be a SELECT query")
            return nil
        }
        return SQLQuery(text: text, timeoutSeconds: timeout)
    }

    /// `"30s"` or any definition duration, in seconds.
    public static func timeoutSeconds(_ text: String) -> Int? {
        if text.hasSuffix("s") {
            let digits = text.dropLast()
            guard !digits.isEmpty, digits.count <= 7, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let n = Int(digits), n > 0 else { return nil }
            return n
        }
        return SyncDuration(parsing: text)?.seconds
    }

    // MARK: - Conditions

    private mutating func condition(_ json: JSONValue, _ path: String, depth: Int) -> Condition? {
        guard depth <= Self.maxDepth else {
            add(path, "conditions nest deeper than \(Self.maxDepth) levels")
            return nil
        }
        guard let object = object(json, path) else { return nil }
        let tags = Condition.Tag.allCases.filter { object[$0.rawValue] != nil }
        guard tags.count == 1, let tag = tags.first else {
            if tags.isEmpty {
                add(path, "must have one of \(Condition.Tag.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")); got \(fieldList(object))")
            } else {
                add(path, "must have exactly one of \(tags.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), not several")
            }
            return nil
        }
        let field = tag.rawValue
        switch tag {
        case .all, .any:
            unknownFields(object, allowed: [field], path)
            let itemsPath = join(path, field)
            guard let array = object[field]?.arrayValue else {
                add(itemsPath, "must be an array of conditions, got \(describe(object[field]))")
                return nil
            }
            if array.isEmpty { add(itemsPath, "must have at least one condition") }
            let items = array.enumerated().map { condition($1, "\(itemsPath)[\($0)]", depth: depth + 1) }
            let parsed = items.compactMap { $0 }
            guard parsed.count == items.count, !parsed.isEmpty else { return nil }
            return tag == .all ? .all(parsed) : .any(parsed)
        case .not:
            unknownFields(object, allowed: [field], path)
            guard let inner = object[field] else { return nil }
            return condition(inner, join(path, field), depth: depth + 1).map { .not($0) }
        case .audience:
            unknownFields(object, allowed: [field], path)
            guard let key = object[field]?.stringValue else {
                add(join(path, field), "must be an audience key (a string), got \(describe(object[field]))")
                return nil
            }
            if let problem = Keys.problem(with: key) {
                add(join(path, field), "is not a valid key: \(problem)")
                return nil
            }
            return .audience(key)
        case .event:
            return eventCondition(object, path).map { .event($0) }
        case .trait:
            let traitPath = join(path, field)
            guard let raw = object[field]?.stringValue else {
                add(traitPath, "must be a trait path (a string), got \(describe(object[field]))")
                return nil
            }
            let parsedPath = propertyPath(raw, traitPath)
            let op = self.operator(object, nonOperatorFields: [field], path)
            guard let parsedPath, let op else { return nil }
            return .trait(parsedPath, op)
        }
    }

    private mutating func eventCondition(_ object: [String: JSONValue], _ path: String) -> EventCondition? {
        unknownFields(object, allowed: ["event", "where", "within", "between", "count"], path)
        let event = string(object, "event", path, required: true, maxLength: 1_000)
        if let event, event.isEmpty { add(join(path, "event"), "must not be empty") }
        let filters = self.filters(object["where"], join(path, "where"))
        var window: TimeWindow?
        if object["within"] != nil, object["between"] != nil {
            add(path, "has both \"within\" and \"between\"; use one")
        } else if let raw = object["within"] {
            window = duration(raw, join(path, "within")).map { .within($0) }
        } else if let raw = object["between"] {
            window = between(raw, join(path, "between"))
        }
        var count = CountRule.atLeast(1)
        if let raw = object["count"] {
            let countPath = join(path, "count")
            if let c = raw.objectValue {
                let rules = CountRule.Name.allCases.filter { c[$0.rawValue] != nil }
                unknownFields(c, allowed: Set(CountRule.Name.allCases.map(\.rawValue)), countPath)
                if rules.count != 1 {
                    add(countPath, "must have exactly one of \(CountRule.Name.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))")
                } else if let rule = rules.first, let n = nonNegativeInteger(c[rule.rawValue], join(countPath, rule.rawValue)) {
                    switch rule {
                    case .atLeast: count = .atLeast(n)
                    case .atMost: count = .atMost(n)
                    case .exactly: count = .exactly(n)
                    }
                }
            } else {
                add(countPath, "must be an object like {\"at_least\": 1}, got \(describe(raw))")
            }
        }
        guard let event, let filters else { return nil }
        return EventCondition(event: event, filters: filters, window: window, count: count)
    }

    private mutating func between(_ raw: JSONValue, _ path: String) -> TimeWindow? {
        guard let array = raw.arrayValue, array.count == 2 else {
            add(path, "must be an array of two durations [older, newer], e.g. [\"60d\", \"30d\"], got \(describe(raw))")
            return nil
        }
        let older = duration(array[0], "\(path)[0]")
        let newer = duration(array[1], "\(path)[1]")
        guard let older, let newer else { return nil }
        guard older.seconds > newer.seconds else {
            add(path, "is in the wrong order: the first duration (\(older)) must be longer than the second (\(newer)), as in [\"60d\", \"30d\"]")
            return nil
        }
        return .between(older, newer)
    }

    private mutating func filters(_ raw: JSONValue?, _ path: String) -> [Filter]? {
        guard let raw else { return [] }
        guard let array = raw.arrayValue else {
            add(path, "must be an array of filters, got \(describe(raw))")
            return nil
        }
        var result: [Filter] = []
        var ok = true
        for (i, item) in array.enumerated() {
            let itemPath = "\(path)[\(i)]"
            guard let object = object(item, itemPath) else { ok = false; continue }
            guard let rawPath = object["property"]?.stringValue else {
                add(join(itemPath, "property"), "must be a property path (a string), got \(describe(object["property"]))")
                ok = false
                continue
            }
            let parsedPath = propertyPath(rawPath, join(itemPath, "property"))
            let op = self.operator(object, nonOperatorFields: ["property"], itemPath)
            if let parsedPath, let op { result.append(Filter(path: parsedPath, op: op)) } else { ok = false }
        }
        return ok ? result : nil
    }

    // MARK: - Operators

    private mutating func `operator`(_ object: [String: JSONValue], nonOperatorFields: Set<String>,
                                     _ path: String) -> Operator? {
        let names = Operator.Name.allCases
        let present = names.filter { object[$0.rawValue] != nil }
        unknownFields(object, allowed: nonOperatorFields.union(names.map(\.rawValue)), path)
        guard present.count == 1, let name = present.first, let raw = object[name.rawValue] else {
            if present.isEmpty { add(path, "needs an operator: one of \(names.map(\.rawValue).joined(separator: ", "))") }
            else { add(path, "has several operators (\(present.map(\.rawValue).joined(separator: ", "))); use one") }
            return nil
        }
        let opPath = join(path, name.rawValue)
        func number() -> Double? {
            guard let n = raw.numberValue, n.isFinite else { add(opPath, "must be a number, got \(describe(raw))"); return nil }
            return n
        }
        func string() -> String? {
            guard let s = raw.stringValue else { add(opPath, "must be a string, got \(describe(raw))"); return nil }
            return s
        }
        func values() -> [JSONValue]? {
            guard let array = raw.arrayValue, !array.isEmpty else {
                add(opPath, "must be a non-empty array of values, got \(describe(raw))")
                return nil
            }
            if array.contains(.null) { add(opPath, "cannot contain null; use \"exists\""); return nil }
            return array
        }
        func comparable() -> JSONValue? {
            if case .null = raw { add(opPath, "cannot compare with null; use \"exists\": false"); return nil }
            return raw
        }
        func instant() -> Timestamp? {
            guard let s = raw.stringValue, let t = Timestamp.parse(s) else {
                add(opPath, "must be an ISO-8601 timestamp such as \"2025-01-31T00:00:00Z\", got \(describe(raw))")
                return nil
            }
            return t
        }
        switch name {
        case .equals: return comparable().map { .equals($0) }
        case .notEquals: return comparable().map { .notEquals($0) }
        case .gt: return number().map { .gt($0) }
        case .gte: return number().map { .gte($0) }
        case .lt: return number().map { .lt($0) }
        case .lte: return number().map { .lte($0) }
        case .oneOf: return values().map { .oneOf($0) }
        case .noneOf: return values().map { .noneOf($0) }
        case .contains: return string().map { .contains($0) }
        case .notContains: return string().map { .notContains($0) }
        case .startsWith: return string().map { .startsWith($0) }
        case .endsWith: return string().map { .endsWith($0) }
        case .exists:
            guard let b = raw.boolValue else { add(opPath, "must be true or false, got \(describe(raw))"); return nil }
            return .exists(b)
        case .before: return instant().map { .before($0) }
        case .after: return instant().map { .after($0) }
        case .withinLast: return duration(raw, opPath).map { .withinLast($0) }
        }
    }

    // MARK: - Trait values

    private mutating func traitValue(_ json: JSONValue, _ path: String) -> TraitValue? {
        guard let object = object(json, path) else { return nil }
        unknownFields(object, allowed: ["aggregate", "event", "property", "where", "within"], path)
        var aggregate: TraitValue.Aggregate?
        if let raw = string(object, "aggregate", path, required: true, maxLength: nil) {
            aggregate = TraitValue.Aggregate(rawValue: raw)
            if aggregate == nil {
                add(join(path, "aggregate"), "must be one of \(TraitValue.Aggregate.allCases.map(\.rawValue).joined(separator: ", ")), got \(raw.debugDescription)")
            }
        }
        let event = string(object, "event", path, required: true, maxLength: 1_000)
        if let event, event.isEmpty { add(join(path, "event"), "must not be empty") }
        var property: PropertyPath?
        if let raw = object["property"] {
            if let s = raw.stringValue { property = propertyPath(s, join(path, "property")) }
            else { add(join(path, "property"), "must be a property path (a string), got \(describe(raw))") }
        }
        if let aggregate {
            if aggregate != .count, object["property"] == nil {
                add(join(path, "property"), "is required for the \(aggregate.rawValue) aggregate")
            }
            if aggregate == .count, object["property"] != nil {
                add(join(path, "property"), "is not used by count; remove it")
            }
        }
        let filters = self.filters(object["where"], join(path, "where"))
        var within: SyncDuration?
        if let raw = object["within"] { within = duration(raw, join(path, "within")) }
        guard let aggregate, let event, let filters else { return nil }
        return TraitValue(aggregate: aggregate, event: event, property: property, filters: filters, within: within)
    }

    // MARK: - Helpers

    private mutating func add(_ path: String, _ reason: String) {
        issues.append(ValidationIssue(path: path, reason: reason))
    }

    private func join(_ path: String, _ field: String) -> String { path.isEmpty ? field : "\(path).\(field)" }

    private func describe(_ value: JSONValue?) -> String {
        guard let value else { return "nothing" }
        switch value {
        case .string(let s): return "\(s.count > 60 ? String(s.prefix(60)) + "…" : s)".debugDescription
        case .int, .double, .bool, .null: return value.jsonString
        default: return "a\(value.typeName == "array" || value.typeName == "object" ? "n" : "") \(value.typeName)"
        }
    }

    private func fieldList(_ object: [String: JSONValue]) -> String {
        object.isEmpty ? "an empty object" : "fields " + object.keys.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
    }

    private mutating func object(_ json: JSONValue, _ path: String) -> [String: JSONValue]? {
        guard let object = json.objectValue else {
            add(path, "must be an object, got \(describe(json))")
            return nil
        }
        return object
    }

    private mutating func unknownFields(_ object: [String: JSONValue], allowed: Set<String>, _ path: String) {
        for field in object.keys.sorted() where !allowed.contains(field) {
            add(join(path, field), "unknown field (allowed here: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    private mutating func string(_ object: [String: JSONValue], _ field: String, _ path: String,
                                 required: Bool, maxLength: Int?) -> String? {
        guard let raw = object[field] else {
            if required { add(join(path, field), "is required") }
            return nil
        }
        guard let s = raw.stringValue else {
            add(join(path, field), "must be a string, got \(describe(raw))")
            return nil
        }
        if let maxLength, s.count > maxLength {
            add(join(path, field), "must be at most \(maxLength) characters, got \(s.count)")
            return nil
        }
        if required, s.isEmpty {
            add(join(path, field), "must not be empty")
            return nil
        }
        return s
    }

    private mutating func bool(_ object: [String: JSONValue], _ field: String, _ path: String) -> Bool? {
        guard let raw = object[field] else { return nil }
        guard let b = raw.boolValue else {
            add(join(path, field), "must be true or false, got \(describe(raw))")
            return nil
        }
        return b
    }

    private mutating func duration(_ raw: JSONValue, _ path: String) -> SyncDuration? {
        guard let s = raw.stringValue, let d = SyncDuration(parsing: s) else {
            add(path, "must be a duration like \"90m\", \"12h\", \"30d\" or \"2w\" (a positive whole number and a unit m, h, d, w), got \(describe(raw))")
            return nil
        }
        guard d.seconds <= Self.maxDurationSeconds else {
            add(path, "must be at most 100 years (\"36500d\", \"5214w\"), got \(describe(raw))")
            return nil
        }
        return d
    }

    private mutating func nonNegativeInteger(_ raw: JSONValue?, _ path: String) -> Int? {
        guard case .int(let n)? = raw, n >= 0 else {
            add(path, "must be a non-negative integer, got \(describe(raw))")
            return nil
        }
        return n
    }

    private mutating func propertyPath(_ raw: String, _ path: String) -> PropertyPath? {
        guard raw.count <= 1_000, let parsed = PropertyPath(parsing: raw) else {
            add(path, "must be a dotted path with no empty parts (e.g. \"address.city\"; write a literal dot as \\.), got \(raw.prefix(60).debugDescription)")
            return nil
        }
        return parsed
    }
}
