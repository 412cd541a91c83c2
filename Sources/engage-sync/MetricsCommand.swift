import ArgumentParser
import EngageCore
import EngageStore

extension EngageSyncCommand {
    struct Metrics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the gauges held in the database in Prometheus text format.",
            discussion: """
                For cron users: write them where node_exporter's textfile collector reads, e.g.
                engage-sync metrics > /var/lib/node_exporter/engage_sync.prom.$$ && \\
                  mv /var/lib/node_exporter/engage_sync.prom.$$ /var/lib/node_exporter/engage_sync.prom
                """)
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let gauges = try await database.withConnection { try await GaugeStore($0).gauges() }
            print(PrometheusText.render(gauges), terminator: "")
        }
    }
}
