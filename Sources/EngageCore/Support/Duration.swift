/// A definition's duration: a positive whole number of minutes, hours, days or weeks
/// (`"90m"`, `"12h"`, `"30d"`, `"2w"`).
public struct SyncDuration: Sendable, Hashable, CustomStringConvertible, Codable {
    public enum Unit: String, Sendable, Codable, CaseIterable {
        case minutes = "m", hours = "h", days = "d", weeks = "w"

        var seconds: Int {
            switch self {
            case .minutes: 60
            case .hours: 3_600
            case .days: 86_400
            case .weeks: 604_800
            }
        }

        var intervalUnit: String {
            switch self {
            case .minutes: "minutes"
            case .hours: "hours"
            case .days: "days"
            case .weeks: "weeks"
            }
        }
    }

    public let amount: Int
    public let unit: Unit

    public init(amount: Int, unit: Unit) {
        self.amount = amount
        self.unit = unit
    }

    /// Parses `"<positive integer><unit>"`; nil when malformed, zero or absurdly large.
    public init?(parsing text: String) {
        guard let last = text.last, let unit = Unit(rawValue: String(last)) else { return nil }
        let digits = text.dropLast()
        guard !digits.isEmpty, digits.count <= 7, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let amount = Int(digits), amount > 0 else { return nil }
        self.init(amount: amount, unit: unit)
    }

    public var seconds: Int { amount * unit.seconds }

    /// The PostgreSQL interval literal, e.g. `30 days`.
    public var intervalText: String { "\(amount) \(unit.intervalUnit)" }

    public var description: String { "\(amount)\(unit.rawValue)" }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = SyncDuration(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad duration \(text)"))
        }
        self = parsed
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
