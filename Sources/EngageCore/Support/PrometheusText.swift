import Foundation

/// A gauge with its samples, as the Prometheus text format (version 0.0.4) exposes it.
public struct Gauge: Sendable {
    /// One value of the gauge, for one set of labels.
    public struct Sample: Sendable {
        /// Label names and values, in the order they are printed.
        public var labels: [(name: String, value: String)]
        public var value: Double

        public init(labels: [(name: String, value: String)], value: Double) {
            self.labels = labels
            self.value = value
        }
    }

    /// A metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), units in the name.
    public var name: String
    public var help: String
    public var samples: [Sample]

    public init(name: String, help: String, samples: [Sample]) {
        self.name = name
        self.help = help
        self.samples = samples
    }
}

/// Renders gauges in the Prometheus text exposition format: `# HELP` and `# TYPE` lines, then
/// one line per sample, label values escaped (`\`, `"`, newline) as the format requires.
public enum PrometheusText {
    public static func render(_ gauges: [Gauge]) -> String {
        var out = ""
        for gauge in gauges {
            out += "# HELP \(gauge.name) \(escapeHelp(gauge.help))\n"
            out += "# TYPE \(gauge.name) gauge\n"
            for sample in gauge.samples {
                out += gauge.name
                if !sample.labels.isEmpty {
                    out += "{" + sample.labels.map { "\($0.name)=\"\(escapeLabel($0.value))\"" }.joined(separator: ",") + "}"
                }
                out += " \(number(sample.value))\n"
            }
        }
        return out
    }

    /// Integral values without a fraction (`12`, not `12.0`).
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 9.0e15 { return String(Int64(value)) }
        return String(value)
    }

    static func escapeLabel(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }

    static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }
}
