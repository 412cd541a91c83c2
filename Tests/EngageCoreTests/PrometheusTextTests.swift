import EngageCore
import Testing

@Suite("Prometheus text format")
struct PrometheusTextTests {
    @Test("HELP and TYPE before the samples; labels escaped; integral values without a fraction")
    func render() {
        let text = PrometheusText.render([
            Gauge(name: "engage_sync_outbox_pending", help: "Waiting rows.", samples: [
                .init(labels: [("destination", "vero")], value: 12),
                .init(labels: [("destination", #"a "quoted" \ name"#)], value: 0.5),
            ]),
            Gauge(name: "engage_sync_members", help: "Line one\nline two", samples: [
                .init(labels: [("key", "multi\nline")], value: 3_000_000),
            ]),
            Gauge(name: "engage_sync_empty", help: "No samples.", samples: []),
        ])
        #expect(text == #"""
            # HELP engage_sync_outbox_pending Waiting rows.
            # TYPE engage_sync_outbox_pending gauge
            engage_sync_outbox_pending{destination="vero"} 12
            engage_sync_outbox_pending{destination="a \"quoted\" \\ name"} 0.5
            # HELP engage_sync_members Line one\nline two
            # TYPE engage_sync_members gauge
            engage_sync_members{key="multi\nline"} 3000000
            # HELP engage_sync_empty No samples.
            # TYPE engage_sync_empty gauge

            """#)
    }
}
