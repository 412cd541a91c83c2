/// Checks that hold across definitions: audience references resolve, form no cycle, and
/// keys do not collide. Pure: the caller supplies what is stored.
public enum DefinitionGraph {
    /// Where a `{"audience": key}` reference sits in the JSON, e.g. `condition.all[1].not.audience`.
    public static func referencePaths(_ definition: Definition) -> [(key: String, path: String)] {
        guard case .condition(let condition) = definition.source else { return [] }
        var out: [(String, String)] = []
        func walk(_ c: Condition, _ path: String) {
            switch c {
            case .all(let items): for (i, item) in items.enumerated() { walk(item, "\(path).all[\(i)]") }
            case .any(let items): for (i, item) in items.enumerated() { walk(item, "\(path).any[\(i)]") }
            case .not(let inner): walk(inner, "\(path).not")
            case .audience(let key): out.append((key, "\(path).audience"))
            case .event, .trait: break
            }
        }
        walk(condition, "condition")
        return out
    }

    /// Every reference that does not name a known audience, and every cycle, as issues.
    /// `known` maps each key (stored and new) to its definition; `checking` are the new ones,
    /// with the path prefix of each in its file.
    public static func problems(checking: [(definition: Definition, path: String)],
                                known: [String: Definition]) -> [ValidationIssue] {
        var issues: [ValidationIssue] = []
        for (definition, prefix) in checking {
            for (key, path) in referencePaths(definition) {
                let fullPath = ValidationIssue.join(prefix, path)
                guard let target = known[key] else {
                    issues.append(ValidationIssue(path: fullPath, reason: "refers to unknown audience \(key.debugDescription)"))
                    continue
                }
                if target.kind != .audience {
                    issues.append(ValidationIssue(path: fullPath, reason: "\(key.debugDescription) is a trait, not an audience"))
                }
            }
            if let cycle = cycle(from: definition.key, known: known) {
                issues.append(ValidationIssue(path: ValidationIssue.join(prefix, "condition"),
                                              reason: "audience references form a cycle: \(cycle.joined(separator: " → "))"))
            }
        }
        return issues
    }

    /// A cycle through `start`, as the keys along it (first and last equal), or nil.
    public static func cycle(from start: String, known: [String: Definition]) -> [String]? {
        var visiting: [String] = []
        var done: Set<String> = []
        func visit(_ key: String) -> [String]? {
            if let index = visiting.firstIndex(of: key) {
                return key == start ? Array(visiting[index...]) + [key] : nil
            }
            if done.contains(key) { return nil }
            visiting.append(key)
            for next in known[key]?.referencedAudiences ?? [] {
                if let found = visit(next) { return found }
            }
            visiting.removeLast()
            done.insert(key)
            return nil
        }
        return visit(start)
    }

    /// What a definition's result depends on as written: its own document and, when it refers
    /// to audiences, theirs by key, followed transitively. An evaluation made under another one
    /// cannot be continued incrementally: editing, disabling or re-enabling an audience makes
    /// every definition built on it evaluate in full. A definition that refers to none is its
    /// own document, as stored before references were followed.
    public static func evaluatedDocument(_ definition: Definition, audiences: [String: Definition]) -> JSONValue {
        var referenced: [String: JSONValue] = [:]
        var next = definition.referencedAudiences
        while let key = next.popLast() {
            guard referenced[key] == nil, key != definition.key, let audience = audiences[key] else { continue }
            referenced[key] = audience.document
            next += audience.referencedAudiences
        }
        guard !referenced.isEmpty else { return definition.document }
        return ["definition": definition.document, "audiences": .object(referenced)]
    }

    /// `items` reordered so that every audience comes before the definitions that refer to
    /// it (a SQL audience's snapshot must be current before a condition reads it); otherwise
    /// in their given order. References outside `items`, and cycles, are left as they are.
    public static func dependencyOrder<T>(_ items: [T], definition: (T) -> Definition) -> [T] {
        let index = Dictionary(items.enumerated().map { (definition($1).key, $0) }, uniquingKeysWith: { a, _ in a })
        var placed = Set<Int>(), visiting = Set<Int>()
        var order: [T] = []
        func place(_ i: Int) {
            guard !placed.contains(i), visiting.insert(i).inserted else { return }
            for key in definition(items[i]).referencedAudiences { if let j = index[key] { place(j) } }
            placed.insert(i)
            order.append(items[i])
        }
        for i in items.indices { place(i) }
        return order
    }
}
