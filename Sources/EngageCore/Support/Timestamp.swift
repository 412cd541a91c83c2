import Foundation

/// An instant with PostgreSQL's precision: whole microseconds since the Unix epoch, UTC.
///
/// `Date` is a `Double` of seconds since 2001, which cannot hold every microsecond of this
/// century exactly, and `ISO8601DateFormatter` keeps only milliseconds; a definition's bound
/// (`"after": "2026-08-21T07:16:15.260982Z"`) must compare exactly as PostgreSQL would, so it
/// is kept as an integer from the text to the bound parameter.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var microsecondsSinceEpoch: Int64

    public init(microsecondsSinceEpoch: Int64) {
        self.microsecondsSinceEpoch = microsecondsSinceEpoch
    }

    /// The nearest microsecond to `date`.
    public init(_ date: Date) {
        microsecondsSinceEpoch = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
    }

    public var date: Date { Date(timeIntervalSince1970: Double(microsecondsSinceEpoch) / 1_000_000) }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.microsecondsSinceEpoch < rhs.microsecondsSinceEpoch
    }

    /// The one parser of timestamps in definitions, Segment calls, `ENGAGE_SYNC_NOW` and
    /// `--as-of`: `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH[:MM])` (`T`, `t` or a space between date and
    /// time), `YYYY-MM-DD` or `YYYY` (a date or a bare year, as in Segment's own fixtures, is its
    /// first instant, UTC). Up to six fractional digits are exact; more are rounded to the
    /// microsecond. Strict: a day the month does not have (`2026-02-30`), second 60, or an
    /// offset beyond ±18:00 is refused, never rolled over. Hand-written: it runs for every row
    /// delivered or ingested.
    public static func parse(_ text: String) -> Timestamp? {
        let b = Array(text.utf8)
        func digits(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= b.count else { return nil }
            var n = 0
            for i in from..<(from + count) {
                guard b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") else { return nil }
                n = n * 10 + Int(b[i] - UInt8(ascii: "0"))
            }
            return n
        }
        guard let year = digits(0, 4), year > 0 else { return nil }
        if b.count == 4 { return make(year, 1, 1, seconds: 0, micros: 0, offset: 0) }
        guard b.count >= 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              let month = digits(5, 2), let day = digits(8, 2),
              (1...12).contains(month), (1...daysIn(month, of: year)).contains(day) else { return nil }
        if b.count == 10 { return make(year, month, day, seconds: 0, micros: 0, offset: 0) }
        guard b.count >= 20, [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(b[10]),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let hour = digits(11, 2), let minute = digits(14, 2), let second = digits(17, 2),
              hour < 24, minute < 60, second < 60 else { return nil }
        var i = 19
        var micros: Int64 = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            var scale: Int64 = 100_000
            var roundUp = false
            while i < b.count, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") {
                let digit = Int64(b[i] - UInt8(ascii: "0"))
                if scale > 0 {
                    micros += digit * scale
                    scale /= 10
                } else if i - start == 6 {
                    roundUp = digit >= 5
                }
                i += 1
            }
            guard i > start else { return nil }
            if roundUp { micros += 1 }
        }
        guard i < b.count else { return nil }
        var offset = 0
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            guard let hours = digits(i + 1, 2) else { return nil }
            var j = i + 3
            var minutes = 0
            if j < b.count, b[j] == UInt8(ascii: ":") { j += 1 }
            if let m = digits(j, 2) { minutes = m; j += 2 }
            guard minutes < 60, hours * 60 + minutes <= 18 * 60 else { return nil }
            offset = sign * (hours * 3600 + minutes * 60)
            i = j
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        return make(year, month, day, seconds: hour * 3600 + minute * 60 + second, micros: micros, offset: offset)
    }

    /// The days of `month` in `year` (Gregorian).
    private static func daysIn(_ month: Int, of year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    private static func make(_ year: Int, _ month: Int, _ day: Int, seconds: Int, micros: Int64, offset: Int) -> Timestamp {
        // Days from civil (Howard Hinnant's algorithm): no calendar object needed.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let epochSeconds = Int64(days * 86_400 + seconds - offset)
        return Timestamp(microsecondsSinceEpoch: epochSeconds * 1_000_000 + micros)
    }

    /// ISO-8601 in UTC with all six fractional digits: `2026-08-21T07:16:15.260982Z`.
    /// PostgreSQL reads it exactly, whatever the session's `TimeZone`.
    public var iso8601: String {
        let (seconds, micros) = microsecondsSinceEpoch.quotientAndRemainder(dividingBy: 1_000_000)
        let (s, us) = micros < 0 ? (seconds - 1, micros + 1_000_000) : (seconds, micros)
        let (days, secondOfDay) = s.quotientAndRemainder(dividingBy: 86_400)
        let (d, sod) = secondOfDay < 0 ? (days - 1, secondOfDay + 86_400) : (days, secondOfDay)
        // Civil from days (Howard Hinnant's algorithm).
        let z = Int(d) + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ n: Int, _ width: Int) -> String {
            let text = String(n)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let sodInt = Int(sod)
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(sodInt / 3600, 2)):\(pad(sodInt / 60 % 60, 2)):"
            + "\(pad(sodInt % 60, 2)).\(pad(Int(us), 6))Z"
    }

    /// ISO-8601 in UTC to the second, as status reads show instants: `2026-08-21T07:16:15Z`.
    public var iso8601Seconds: String { String(iso8601.prefix { $0 != "." }) + "Z" }

    public var description: String { iso8601 }
}
