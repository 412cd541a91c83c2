import EngageCore
import Foundation
import Testing

@Suite("Timestamps: one parser, exact to the microsecond")
struct TimestampTests {
    @Test("each accepted form reads as the instant it names", arguments: [
        ("2026-08-21T07:16:15.260982Z", "2026-08-21T07:16:15.260982Z"),
        ("2026-08-21T07:16:15Z", "2026-08-21T07:16:15.000000Z"),
        ("2026-08-21t07:16:15.5z", "2026-08-21T07:16:15.500000Z"),
        ("2026-08-21 07:16:15.260982+00", "2026-08-21T07:16:15.260982Z"),
        ("2026-08-21T12:46:15.260982+05:30", "2026-08-21T07:16:15.260982Z"),
        ("2026-08-21T04:46:15.260982-0230", "2026-08-21T07:16:15.260982Z"),
        ("2026-08-21T07:16:15.2609824Z", "2026-08-21T07:16:15.260982Z"),
        ("2026-08-21T07:16:15.2609825Z", "2026-08-21T07:16:15.260983Z"),
        ("2026-08-21T23:59:59.9999999Z", "2026-08-22T00:00:00.000000Z"),
        ("2026-08-21", "2026-08-21T00:00:00.000000Z"),
        ("2014", "2014-01-01T00:00:00.000000Z"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z"),
        ("2000-02-29T00:00:00Z", "2000-02-29T00:00:00.000000Z"),
        ("2024-02-29", "2024-02-29T00:00:00.000000Z"),
        ("2026-08-21T07:16:15+18:00", "2026-08-20T13:16:15.000000Z"),
        ("2026-08-21T07:16:15-18:00", "2026-08-22T01:16:15.000000Z"),
    ])
    func parses(text: String, iso: String) {
        #expect(Timestamp.parse(text)?.iso8601 == iso)
    }

    @Test("what is not a timestamp is refused", arguments: [
        "", "yesterday", "2026-13-01", "2026-08-21T07:16", "2026-08-21T07:16:15", "2026-08-21T07:16:15.Z",
        "2026-08-21T07:16:15Zjunk", "20260821T071615Z", "2026-08-21T25:00:00Z",
        // Impossible values are refused, never rolled over.
        "2026-02-30", "2026-02-29T00:00:00Z", "1900-02-29", "2026-04-31T00:00:00Z", "2026-08-21T07:16:60Z",
        "2026-08-21T07:16:15+25:00", "2026-08-21T07:16:15+18:01", "2026-08-21T07:16:15-1860",
    ])
    func refuses(text: String) {
        #expect(Timestamp.parse(text) == nil)
    }

    @Test("microseconds survive a round trip through text and through Date at this century's instants")
    func roundTrips() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let micros = Int64.random(in: 0...4_102_444_800_000_000, using: &generator) // 1970 … 2100
            let t = Timestamp(microsecondsSinceEpoch: micros)
            #expect(Timestamp.parse(t.iso8601) == t)
            #expect(Timestamp(t.date) == t)
        }
        #expect(Timestamp(microsecondsSinceEpoch: 1) < Timestamp(microsecondsSinceEpoch: 2))
    }
}
