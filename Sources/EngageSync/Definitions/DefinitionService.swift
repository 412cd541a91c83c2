import EngageCore
import EngageStore
import Foundation
import PostgresClient

/// What `define --plan` found: each definition of the files as new, changed or unchanged, and
/// the planned pairs (status `planned` or `blocked`) of those new or changed and of the
/// definitions built on them.
public struct DefinitionPlan: Sendable {
    public var definitions: [(key: String, outcome: SaveOutcome)]
    public var pairs: [PairOutcome]
}

/// `define`, `list`, `preview`, `remove`: reading definition files and managing what is stored.
public struct DefinitionService: Sendable {
    public let repository: DefinitionRepository

    /// `sql`: where SQL definitions' queries are checked (the login they will run as).
    public init(_ db: PostgresConnection, sql: SQLSource = SQLSource()) { repository = DefinitionRepository(db, sql: sql) }

    /// A definition file could not be read.
    public struct FileError: Error, CustomStringConvertible, Sendable {
        public var file: String
        public var reason: String
        public var description: String { "\(file): \(reason)" }
    }

    /// Reads every file (a JSON object or an array of them), validates everything, and saves
    /// only when nothing is wrong anywhere. Issues are reported as `file:json.path: reason`.
    public func define(files: [String], dryRun: Bool) async throws -> [(key: String, outcome: SaveOutcome)] {
        try await repository.save(try await read(files), dryRun: dryRun)
    }

    /// What storing the definitions of `files` would change, without storing them: in one
    /// transaction that is rolled back, they are saved and every new or changed one, and each
    /// definition built on one of them, is planned as `run KEYS --dry-run` would at `now`
    /// (``SyncRunner/plan(keys:on:now:)``): per destination its entries, exits and value
    /// changes against the current snapshot and ledger, and whether the guardrail would block.
    /// A SQL audience's query runs; a definition built on a changed SQL audience is planned
    /// against that audience's current snapshot.
    public func plan(files: [String], runner: SyncRunner, now: Date) async throws -> DefinitionPlan {
        let inputs = try await read(files)
        return try await rolledBack { db in
            let saved = try await DefinitionRepository(db, sql: repository.sqlSource).save(inputs)
            let keys = saved.filter { $0.outcome != .unchanged }.map(\.key)
            return DefinitionPlan(definitions: saved, pairs: keys.isEmpty ? [] : try await runner.plan(keys: keys, on: db, now: now))
        }
    }

    /// What `define` prints after storing: the stored `keys`, and the definitions built on them,
    /// planned as ``plan(files:runner:now:)`` plans them. A SQL definition is left out (its
    /// query runs at the next run, not at `define`).
    public func planStored(keys: [String], runner: SyncRunner, now: Date) async throws -> [PairOutcome] {
        let planned = try await repository.read().definitions
            .filter { keys.contains($0.definition.key) && $0.definition.sqlQuery == nil }.map(\.definition.key)
        guard !planned.isEmpty else { return [] }
        return try await rolledBack { try await runner.plan(keys: planned, on: $0, now: now) }
    }

    /// `body` in a transaction that is rolled back whatever it did: a plan stores nothing.
    private func rolledBack<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await repository.db.withTransaction { tx in
            tx.rollback()
            return try await body(tx.connection)
        }
    }

    /// The definitions of `files`, validated; throws every problem at once.
    private func read(_ files: [String]) async throws -> [DefinitionInput] {
        var inputs: [DefinitionInput] = []
        var issues: [ValidationIssue] = []
        for file in files {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: file))
            } catch {
                throw FileError(file: file, reason: "cannot read the file (\((error as NSError).localizedDescription))")
            }
            switch DefinitionParser.parseDocument(data) {
            case .success(let definitions):
                let isArray = data.first(where: { !$0.isWhitespace }) == UInt8(ascii: "[")
                for (i, d) in definitions.enumerated() {
                    inputs.append(DefinitionInput(definition: d, location: isArray ? "\(file):[\(i)]" : file))
                }
            case .failure(let error):
                issues += error.issues.map {
                    ValidationIssue(path: ValidationIssue.join(file, $0.path), reason: $0.reason)
                }
                // The file's SQL queries are checked too, so every problem shows at once.
                issues += try await repository.sqlProblems(Self.sqlQueries(in: data, file: file))
            }
        }
        guard issues.isEmpty else { throw DefinitionValidationError(issues: issues) }
        return inputs
    }
}

extension DefinitionService {
    /// The SQL queries of a file that did not parse whole: each object with a `type` and a
    /// string `sql` (and a well-formed `timeout`, if any), with where it sits.
    static func sqlQueries(in data: Data, file: String) -> [(query: SQLQuery, kind: Definition.Kind, location: String)] {
        guard let json = try? JSONValue.parse(data) else { return [] }
        let items: [(JSONValue, String)] = json.arrayValue.map { $0.enumerated().map { ($1, "\(file):[\($0)]") } } ?? [(json, file)]
        return items.compactMap { item, location in
            guard let text = item["sql"]?.stringValue, let kind = item["type"]?.stringValue.flatMap(Definition.Kind.init) else {
                return nil
            }
            var query = SQLQuery(text: text)
            if let timeout = item["timeout"] {
                guard let seconds = timeout.stringValue.flatMap(DefinitionParser.timeoutSeconds) else { return nil }
                query.timeoutSeconds = seconds
            }
            return (query, kind, location)
        }
    }
}

private extension UInt8 {
    var isWhitespace: Bool { self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09 }
}
