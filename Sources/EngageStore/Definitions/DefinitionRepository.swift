import EngageCore
import Foundation
import PostgresClient

/// A definition as stored in `engage.computations`.
public struct StoredDefinition: Sendable {
    public var id: Int
    public var definition: Definition
    public var removedAt: Date?
    public var createdAt: Date
    public var updatedAt: Date
}

/// A stored definition the parser no longer accepts (stored before a bound was added, or edited
/// by hand in the table). Reads leave it out, so it fails alone: `run` reports it as a failed
/// pair, and `define` (the same key) or `remove` mends it.
public struct UnreadableDefinition: Sendable, CustomStringConvertible {
    public var id: Int
    public var key: String
    public var reason: String
    public var description: String {
        "the stored definition \(key) no longer parses (\(reason)); define it again (engage-sync define) or remove it"
    }
}

/// A definition to save, with where it came from (`file.json:[2]`) for error messages.
public struct DefinitionInput: Sendable {
    public var definition: Definition
    public var location: String
    public init(definition: Definition, location: String) {
        self.definition = definition
        self.location = location
    }
}

/// What ``DefinitionRepository/save(_:dryRun:)`` did with one definition.
public enum SaveOutcome: String, Sendable {
    case created, updated, unchanged
}

/// A key that names no active definition.
public struct UnknownKey: Error, Sendable, CustomStringConvertible {
    public var key: String
    public init(key: String) { self.key = key }
    public var description: String { "no active definition has the key \(key.debugDescription) (see `engage-sync list`)" }
}

/// A `remove` that cannot be done.
public struct RemoveError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Reads and writes `engage.computations`.
public struct DefinitionRepository: Sendable {
    public let db: PostgresConnection
    /// Where SQL definitions' queries run, for `define`'s checks and `preview`.
    public let sqlSource: SQLSource

    public init(_ db: PostgresConnection, sql: SQLSource = SQLSource()) {
        self.db = db
        self.sqlSource = sql
    }

    /// Every definition that parses, tombstones included when asked; ordered by key.
    public func all(includeRemoved: Bool = false) async throws -> [StoredDefinition] {
        try await read(includeRemoved: includeRemoved).definitions
    }

    /// Every definition, tombstones included when asked, ordered by key: those that parse, and
    /// those that no longer do.
    public func read(includeRemoved: Bool = false) async throws -> (definitions: [StoredDefinition], unreadable: [UnreadableDefinition]) {
        let rows = try await db.query("""
            SELECT id, key, definition, removed_at, created_at, updated_at FROM engage.computations
            WHERE \(includeRemoved) OR removed_at IS NULL ORDER BY key
            """)
        var definitions: [StoredDefinition] = [], unreadable: [UnreadableDefinition] = []
        for row in rows {
            do {
                definitions.append(try Self.decode(row))
            } catch let error as StoredDefinitionError {
                unreadable.append(UnreadableDefinition(id: try row.decode(Int.self, "id"), key: try row.decode(String.self, "key"),
                                                       reason: error.reason))
            }
        }
        return (definitions, unreadable)
    }

    public func find(key: String) async throws -> StoredDefinition? {
        try await db.query("""
            SELECT id, definition, removed_at, created_at, updated_at FROM engage.computations WHERE key = \(key)
            """).first.map(Self.decode)
    }

    /// The active (not removed) definition with this key; throws ``UnknownKey`` otherwise.
    public func active(key: String) async throws -> StoredDefinition {
        guard let stored = try await find(key: key), stored.removedAt == nil else { throw UnknownKey(key: key) }
        return stored
    }

    /// Active audiences by key: what `{"audience": key}` references resolve to.
    public func audiences() async throws -> [String: Definition] {
        var map: [String: Definition] = [:]
        for stored in try await all() where stored.definition.kind == .audience {
            map[stored.definition.key] = stored.definition
        }
        return map
    }

    /// Validates the definitions against each other and against what is stored (keys, tombstones,
    /// references, cycles, compilation), then upserts them in one transaction. Throws a
    /// ``DefinitionValidationError`` with every problem and stores nothing when any is found.
    /// With `dryRun`, validates and compiles only.
    public func save(_ inputs: [DefinitionInput], dryRun: Bool = false) async throws -> [(key: String, outcome: SaveOutcome)] {
        // SQL queries are checked in read-only transactions of their own, before the one that saves.
        let sqlIssues = try await sqlProblems(inputs.compactMap { input in
            input.definition.sqlQuery.map { ($0, input.definition.kind, input.location) }
        })
        return try await db.withTransaction { tx in
            // Serialise concurrent saves, so cross-definition checks see a stable picture.
            try await tx.query("SELECT pg_advisory_xact_lock(hashtext('engage-sync:define'))")
            let repository = DefinitionRepository(tx.connection, sql: sqlSource)
            let stored = try await repository.all(includeRemoved: true)
            let issues = Self.problems(inputs, stored: stored) + sqlIssues
            guard issues.isEmpty else { throw DefinitionValidationError(issues: issues) }
            if dryRun {
                let existing = Dictionary(stored.map { ($0.definition.key, $0.definition.document) }, uniquingKeysWith: { a, _ in a })
                return inputs.map { input in
                    let key = input.definition.key
                    let outcome: SaveOutcome = existing[key] == nil ? .created
                        : existing[key] == input.definition.document ? .unchanged : .updated
                    return (key, outcome)
                }
            }
            var results: [(String, SaveOutcome)] = []
            for input in inputs { results.append((input.definition.key, try await repository.upsert(input.definition))) }
            return results
        }
    }

    /// Checks SQL definitions' queries in the database
    /// (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables): each must plan, wrapped
    /// and limited to no rows, in a read-only transaction, and return the columns the contract
    /// asks for. One issue per bad query, at `location.sql`, with PostgreSQL's message and the
    /// position in the query.
    public func sqlProblems(_ queries: [(query: SQLQuery, kind: Definition.Kind, location: String)]) async throws -> [ValidationIssue] {
        var issues: [ValidationIssue] = []
        for (query, kind, location) in queries {
            if let problem = try await sqlSource.problem(with: query, kind: kind, on: db) {
                issues.append(ValidationIssue(path: ValidationIssue.join(location, "sql"), reason: problem))
            }
        }
        return issues
    }

    /// Tombstones a definition: it stops syncing and its key is never reused.
    public func remove(key: String) async throws -> StoredDefinition {
        try await db.withTransaction { tx in
            try await tx.query("SELECT pg_advisory_xact_lock(hashtext('engage-sync:define'))")
            let repository = DefinitionRepository(tx.connection)
            guard let stored = try await repository.find(key: key) else {
                throw RemoveError(description: "no definition has the key \(key.debugDescription)")
            }
            guard stored.removedAt == nil else {
                throw RemoveError(description: "\(key) was already removed")
            }
            let users = try await repository.all().filter { $0.definition.referencedAudiences.contains(key) }
            guard users.isEmpty else {
                throw RemoveError(description: "\(key) is used by \(users.map(\.definition.key).joined(separator: ", ")); change or remove those first")
            }
            try await tx.query("""
                UPDATE engage.computations SET removed_at = now(), enabled = false, updated_at = now() WHERE key = \(key)
                """)
            return try await repository.find(key: key) ?? stored
        }
    }

    // MARK: - Internals

    private func upsert(_ d: Definition) async throws -> SaveOutcome {
        let rows = try await db.query("""
            INSERT INTO engage.computations
                (key, name, type, description, definition, sync_every, send_as, include_anonymous, destinations, enabled,
                 reconcile_every)
            VALUES (\(d.key), \(d.name), \(d.kind.rawValue), \(d.description), \(PostgresJSON(rawJSON: d.document.jsonString))::jsonb,
                    \(d.syncEvery.intervalText)::interval, \(d.sendAs.rawValue), \(d.includeAnonymous), \(d.destinations)::text[],
                    \(d.enabled), \(d.reconcileEvery.intervalText)::interval)
            ON CONFLICT (key) DO UPDATE SET
                name = EXCLUDED.name, description = EXCLUDED.description, definition = EXCLUDED.definition,
                sync_every = EXCLUDED.sync_every, send_as = EXCLUDED.send_as,
                include_anonymous = EXCLUDED.include_anonymous, destinations = EXCLUDED.destinations,
                enabled = EXCLUDED.enabled, reconcile_every = EXCLUDED.reconcile_every, updated_at = now()
            WHERE computations.definition IS DISTINCT FROM EXCLUDED.definition
            RETURNING (xmax = 0) AS inserted
            """)
        guard let row = rows.first else { return .unchanged }
        return try row.decode(Bool.self, "inserted") ? .created : .updated
    }

    static func problems(_ inputs: [DefinitionInput], stored: [StoredDefinition]) -> [ValidationIssue] {
        var issues: [ValidationIssue] = []
        let at = ValidationIssue.join
        let storedByKey = Dictionary(stored.map { ($0.definition.key, $0) }, uniquingKeysWith: { a, _ in a })
        var firstInBatch: [String: DefinitionInput] = [:]
        for input in inputs {
            let d = input.definition
            let keyField = d.keyIsExplicit ? "key" : "name"
            if let earlier = firstInBatch[d.key] {
                issues.append(ValidationIssue(path: at(input.location, keyField),
                    reason: "key \(d.key) is also the key of \(earlier.location) (\(earlier.definition.name.debugDescription)); set a different explicit \"key\""))
                continue
            }
            firstInBatch[d.key] = input
            guard let existing = storedByKey[d.key] else { continue }
            if existing.removedAt != nil {
                issues.append(ValidationIssue(path: at(input.location, keyField),
                    reason: "key \(d.key) belonged to a removed definition and is never reused (destinations may still hold its audience); choose another key"))
            } else if !d.keyIsExplicit && existing.definition.name != d.name {
                issues.append(ValidationIssue(path: at(input.location, "name"),
                    reason: "gives the key \(d.key), which already belongs to \(existing.definition.name.debugDescription); to rename that definition set \"key\": \"\(d.key)\", otherwise set a different explicit \"key\""))
            } else if existing.definition.kind != d.kind {
                issues.append(ValidationIssue(path: at(input.location, "type"),
                    reason: "\(d.key) is stored as a\(existing.definition.kind == .audience ? "n" : "") \(existing.definition.kind.rawValue); the type of a key cannot change"))
            }
        }
        guard issues.isEmpty else { return issues }

        var known: [String: Definition] = [:]
        for s in stored where s.removedAt == nil { known[s.definition.key] = s.definition }
        for input in inputs { known[input.definition.key] = input.definition }
        issues += DefinitionGraph.problems(checking: inputs.map { ($0.definition, $0.location) }, known: known)
        guard issues.isEmpty else { return issues }

        let compiler = DefinitionCompiler(audiences: known.filter { $0.value.kind == .audience })
        for input in inputs {
            do { _ = try compiler.compile(input.definition, now: Date()) } catch {
                issues.append(ValidationIssue(path: input.location, reason: "\(error)"))
            }
        }
        return issues
    }

    /// Why a stored definition does not parse.
    struct StoredDefinitionError: Error, CustomStringConvertible {
        var reason: String
        var description: String { "a stored definition no longer parses: \(reason)" }
    }

    static func decode(_ row: PostgresRow) throws -> StoredDefinition {
        let text = try row.decode(String.self, "definition")
        let document: JSONValue
        do { document = try JSONValue.parse(text) } catch {
            throw StoredDefinitionError(reason: "\(error)")
        }
        let definition: Definition
        switch DefinitionParser.parse(document) {
        case .success(let d): definition = d
        case .failure(let e): throw StoredDefinitionError(reason: "\(e)")
        }
        return StoredDefinition(id: try row.decode(Int.self, "id"), definition: definition,
                                removedAt: try row.decode(Date?.self, "removed_at"),
                                createdAt: try row.decode(Date.self, "created_at"),
                                updatedAt: try row.decode(Date.self, "updated_at"))
    }
}
