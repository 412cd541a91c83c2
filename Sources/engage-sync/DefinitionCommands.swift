import ArgumentParser
import EngageCore
import EngageStore
import EngageSync
import Foundation
import PostgresClient

extension DefinitionValidationError: UserError {}
extension DefinitionService.FileError: UserError {}
extension RemoveError: UserError {}
extension SQLDefinitionError: UserError {}

extension EngageSyncCommand {
    struct Define: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or update definitions from JSON files (an object or an array per file).",
            discussion: """
                Everything is validated first; when any definition has a problem, every problem is printed and nothing is \
                stored (exit 2). After storing, it prints what the next run would send for each new or changed definition \
                and those built on it, as --plan does (a SQL definition's query is not run for it).
                """)

        @OptionGroup var database: DatabaseOptions
        @Flag(help: "Validate and compile only; store nothing.") var dryRun = false
        @Flag(help: """
            Store nothing; say per definition whether it is new, changed or unchanged, and for each new or changed one \
            and each definition built on one, per destination, the entries, exits and changes the next run would send \
            and whether the guardrail would block them.
            """) var plan = false
        @Flag(help: "With --plan: print the plan as JSON.") var json = false
        @Argument(help: "Definition files.") var files: [String]

        func validate() throws {
            guard !(plan && dryRun) else { throw ValidationError("--plan and --dry-run: give one") }
            guard !json || plan else { throw ValidationError("--json goes with --plan") }
        }

        func run() async throws {
            let source = SQLSource(conninfo: database.resolvedURL)
            if plan {
                let now = try RunInstant.now()
                let result = try await database.withServices { pool, client in
                    try await pool.withConnection { db in
                        try await DefinitionService(db, sql: source).plan(files: files, runner: SyncRunner(pool: pool, client: client), now: now)
                    }
                }
                print(json ? Self.json(result).jsonString : Self.text(result))
                return
            }
            let (results, warning) = try await database.withConnection { db in
                let results = try await DefinitionService(db, sql: source).define(files: files, dryRun: dryRun)
                return (results, try await sqlRightsWarning(source, db))
            }
            for (key, outcome) in results {
                print("\(dryRun ? "would be " : "")\(outcome.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(key)")
            }
            if let warning { printError(warning) }
            let changed = results.filter { $0.outcome != .unchanged }.map(\.key)
            guard !dryRun, !changed.isEmpty else { return }
            // What the next run would send, as --plan says it; stored whatever this finds.
            do {
                let now = try RunInstant.now()
                let pairs = try await database.withServices { pool, client in
                    try await pool.withConnection { db in
                        try await DefinitionService(db, sql: source).planStored(keys: changed, runner: SyncRunner(pool: pool, client: client), now: now)
                    }
                }
                let lines = Self.pairLines(pairs, changed: Set(changed))
                if !lines.isEmpty { print("the next run would send:\n" + lines.joined(separator: "\n")) }
            } catch {
                printError("warning: stored; what the next run would send could not be planned: \(error)")
            }
        }

        /// The plan as lines: each definition's outcome, then each planned pair.
        static func text(_ plan: DefinitionPlan) -> String {
            var lines = plan.definitions.map { "\(word($0.outcome)) \($0.key)" }
            lines += pairLines(plan.pairs, changed: Set(plan.definitions.filter { $0.outcome != .unchanged }.map(\.key)))
            if plan.pairs.isEmpty { lines.append("nothing would be sent") }
            return lines.joined(separator: "\n")
        }

        /// How a plan names what storing does to a definition.
        static func word(_ outcome: SaveOutcome) -> String {
            switch outcome {
            case .created: "new"
            case .updated: "changed"
            case .unchanged: "unchanged"
            }
        }

        /// One line per planned pair: what its next run would send, or that the guardrail would block it.
        static func pairLines(_ pairs: [PairOutcome], changed: Set<String>) -> [String] {
            var lines: [String] = []
            for p in pairs {
                let c = p.counts
                var line = "  \(p.key) → \(p.destination)\(changed.contains(p.key) ? "" : " (built on a changed audience)"): "
                switch p.status {
                case .blocked: line += "the guardrail would BLOCK it: \(p.message ?? "")"
                case .planned:
                    line += "\(p.mode.rawValue) run would send +\(c.entered) entered, -\(c.exited) exited, \(c.changed) changed "
                        + "(\(c.members) members, \(c.unchanged) unchanged)"
                default: line += "\(p.status.rawValue)\(p.message.map { ": \($0)" } ?? "")"
                }
                lines.append(line)
            }
            return lines
        }

        static func json(_ plan: DefinitionPlan) -> JSONValue {
            [
                "definitions": .array(plan.definitions.map {
                    ["key": .string($0.key), "outcome": .string(word($0.outcome))]
                }),
                "pairs": .array(plan.pairs.map { p in
                    [
                        "key": .string(p.key), "destination": .string(p.destination), "mode": .string(p.mode.rawValue),
                        "status": .string(p.status == .planned ? "planned" : p.status.rawValue),
                        "members": .int(p.counts.members), "entered": .int(p.counts.entered), "exited": .int(p.counts.exited),
                        "changed": .int(p.counts.changed), "unchanged": .int(p.counts.unchanged),
                        "blocked": p.status == .blocked ? .string(p.message ?? "") : .null,
                    ]
                }),
            ]
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List definitions.")
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let (stored, unreadable) = try await database.withConnection { try await DefinitionRepository($0).read() }
            if stored.isEmpty && unreadable.isEmpty {
                print("no definitions yet: add some with `engage-sync define FILE`")
                return
            }
            var table = [["KEY", "TYPE", "ENABLED", "EVERY", "NAME"]]
            for s in stored {
                let d = s.definition
                table.append([d.key, d.kind.rawValue, d.enabled ? "yes" : "no", d.syncEvery.description, d.name])
            }
            for broken in unreadable { table.append([broken.key, "?", "no: it no longer parses", "-", "-"]) }
            printTable(table)
            for broken in unreadable { printError("warning: \(broken)") }
        }
    }

    struct Preview: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Evaluate a definition now: member count (or value distribution) and a sample. Writes nothing.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The definition's key.") var key: String
        @Option(help: "How many sample profiles to show.") var limit = 10
        @Flag(help: "Print the compiled SQL as a PREPARE/EXECUTE pair for psql instead of running it.") var sql = false
        @Option(name: .customLong("as-of"), help: "Evaluate at this instant (ISO-8601) instead of now.") var asOf: String?

        func run() async throws {
            let now = try asOf.map { try RunInstant.parse($0, from: "--as-of") } ?? RunInstant.now()
            if sql {
                print(try await database.withConnection { db -> String in
                    let repository = DefinitionRepository(db)
                    return try await repository.psqlScript(try await repository.active(key: key).definition, now: now)
                })
                return
            }
            let started = Date()
            if let sqlPreview = try await database.withConnection({ db -> SQLPreview? in
                let repository = DefinitionRepository(db, sql: SQLSource(conninfo: database.resolvedURL))
                let definition = try await repository.active(key: key).definition
                guard definition.sqlQuery != nil else { return nil }
                return try await repository.previewSQL(definition, limit: max(0, limit))
            }) {
                printSQLPreview(sqlPreview, seconds: Date().timeIntervalSince(started))
                return
            }
            let (definition, result) = try await database.withConnection { db in
                let repository = DefinitionRepository(db)
                let stored = try await repository.active(key: key)
                return (stored.definition, try await repository.preview(stored.definition, limit: max(0, limit), now: now))
            }
            let seconds = Date().timeIntervalSince(started)
            switch definition.kind {
            case .audience:
                print("\(definition.key): \(result.total) members (evaluated in \(String(format: "%.2f", seconds)) s)")
            case .trait:
                print("\(definition.key): \(result.total) profiles have a value (evaluated in \(String(format: "%.2f", seconds)) s)")
                if !result.distribution.isEmpty {
                    print("\nmost common values:")
                    printTable([["VALUE", "PROFILES"]] + result.distribution.map { [$0.value, String($0.profiles)] })
                }
            }
            if !result.sample.isEmpty {
                print("\nsample:")
                printTable([["PROFILE", "USER_ID", "EMAIL", "VALUE"]]
                           + result.sample.map { [$0.profileID, $0.userID ?? "-", $0.email ?? "-", $0.value] })
            }
        }

        /// A SQL definition's preview: rows, identifiers known and unknown, a sample.
        private func printSQLPreview(_ p: SQLPreview, seconds: Double) {
            print("\(key): the query returned \(p.rows) rows (in \(String(format: "%.2f", seconds)) s)")
            let unknown = p.rows - p.known - p.nullIdentifiers
            let fate = p.identifier == "profile_id" ? "a run ignores them" : "a run creates a profile for each"
            print("\(p.identifier): \(p.known) known, \(unknown) unknown (\(fate))")
            if p.nullIdentifiers > 0 { print("warning: \(p.nullIdentifiers) rows have a NULL \(p.identifier); a run fails until they are filtered out") }
            if !p.sample.isEmpty {
                print("\nsample:")
                printTable([[p.identifier.uppercased(), "EMAIL", "VALUE", "KNOWN"]]
                           + p.sample.map { [$0.id ?? "NULL", $0.email ?? "-", $0.value ?? "-", $0.known ? "yes" : "no"] })
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Tombstone a definition and send exits: its key is never reused.",
            discussion: "Every profile whose ledger says true is sent false (a trait's value is sent as empty), unless --keep-values.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var flags: DeliveryFlags
        @Argument(help: "The definition's key.") var key: String
        @Flag(help: "Leave the destinations' values as they are.") var keepValues = false

        func run() async throws {
            let now = try RunInstant.now()
            let outcomes = try await database.withServices { pool, client in
                try await SyncRunner(pool: pool, client: client).remove(key: key, keepValues: keepValues, delivery: flags.options(),
                                                                      now: now)
            }
            print("removed \(key)\(keepValues ? " (values kept at the destinations)" : "")")
            if !outcomes.isEmpty { try report(outcomes, dryRun: false) }
        }
    }
}

/// When SQL definitions are stored and their queries would run as a superuser (no
/// `ENGAGE_SQL_ROLE`, or one with superuser rights), says so plainly; nil otherwise.
func sqlRightsWarning(_ source: SQLSource, _ db: PostgresConnection) async throws -> String? {
    let sqlDefinitions = try await DefinitionRepository(db).all().filter { $0.definition.sqlQuery != nil }
    guard !sqlDefinitions.isEmpty else { return nil }
    let reader: (user: String, superuser: Bool)
    do {
        reader = try await source.runsAs(fallback: db)
    } catch let error as SQLDefinitionError {
        return "warning: SQL definitions cannot run: \(error.reason)"
    }
    guard reader.superuser else { return nil }
    return "warning: SQL definitions run as \(reader.user), a superuser: their queries can read any table and call any function. "
        + "Set ENGAGE_SQL_ROLE to a login that may only read what they need (docs/definitions.md, SQL definitions: Safety)."
}
