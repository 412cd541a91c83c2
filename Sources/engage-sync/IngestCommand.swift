import ArgumentParser
import EngageSync
import Foundation

extension LineReader.OpenError: UserError {}

extension EngageSyncCommand {
    struct Ingest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load Segment-spec NDJSON (identify, track, page, screen, group, alias) into profiles and events.",
            discussion: "Idempotent by messageId. Malformed lines are reported as `line N: reason` and skipped; exit 3 when any was.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "An NDJSON file, or - for standard input.") var file: String = "-"

        func run() async throws {
            // Progress in MiB of the file when its size is known, else in lines.
            let size = file == "-" ? nil : (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
            let line = size.flatMap { ProgressLine(label: "ingest", unit: "MiB", total: $0 >> 20) }
                ?? ProgressLine(label: "ingest", unit: "lines", total: nil)
            let report = try await database.withPool { pool in
                try await Ingestor(pool: pool).ingest(path: file, onBadLine: { printError($0) }, progress: { lines, bytes in
                    if size != nil { line?.update(done: bytes >> 20, detail: "\(ProgressLine.grouped(lines)) lines") }
                    else { line?.update(done: lines) }
                })
            }
            line?.finish()
            let c = report.counts
            print(String(format: "ingested %d lines in %.1f s: %d events (%d already present), %d profiles created, %d updated, %d aliases; %d lines rejected (%.0f events/s)",
                         report.lines, report.seconds, c.eventsInserted, c.duplicateEvents, c.profilesCreated, c.profilesUpdated,
                         c.aliases, report.rejected, report.eventsPerSecond))
            if report.rejected > 0 { throw ExitCode(ExitStatus.partial) }
        }
    }
}
