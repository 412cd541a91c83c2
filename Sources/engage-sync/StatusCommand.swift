import ArgumentParser
import EngageCore
import EngageStore
import Foundation

extension EngageSyncCommand {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per definition and destination: members, delivered, pending, failed, skipped, last run, next due, paused.")
        @OptionGroup var database: DatabaseOptions
        @Flag(help: "Print JSON (one object per pair).") var json = false

        func run() async throws {
            let (pairs, warning) = try await database.withConnection { db in
                (try await StatusStore(db).pairs(), try await sqlRightsWarning(SQLSource(conninfo: database.resolvedURL), db))
            }
            // On stderr, so `status --json` stays one JSON document.
            if let warning { printError(warning) }
            let rows: [[(column: String, value: JSONValue)]] = pairs.map { p in
                func text(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
                func instant(_ d: Date?) -> JSONValue { text(d.map { Timestamp($0).iso8601Seconds }) }
                return [("key", .string(p.key)), ("destination", .string(p.destination)), ("type", .string(p.type.rawValue)),
                        ("members", .int(p.members)), ("delivered_true", .int(p.deliveredTrue)), ("pending", .int(p.pending)),
                        ("backlog", .int(p.backlog)), ("failed", .int(p.failed)), ("skipped", .int(p.skipped)), ("last_run_at", instant(p.lastRunAt)),
                        ("last_run_status", text(p.lastRunStatus?.rawValue)), ("next_due", instant(p.nextDue)),
                        ("destination_paused_at", instant(p.destinationPausedAt))]
            }
            if json {
                print(JSONValue.array(rows.map { .object(Dictionary(uniqueKeysWithValues: $0.map { ($0.column, $0.value) })) }).jsonString)
                return
            }
            guard let first = rows.first else {
                print("nothing to show: define a definition and add a destination first")
                return
            }
            func cell(_ value: JSONValue) -> String {
                switch value {
                case .null: "-"
                case .string(let s): s
                default: value.jsonString
                }
            }
            printTable([first.map { $0.column.uppercased() }] + rows.map { $0.map { cell($0.value) } })
        }
    }
}
