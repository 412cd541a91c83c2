import EngageCore
import Foundation
import Testing

/// The reader accepts what RFC 8259 accepts and refuses what it refuses; the writer's output
/// reads back as the same value.
@Suite("JSON reader and writer (RFC 8259)")
struct JSONConformanceTests {
    @Test("valid documents read as the values they are", arguments: [
        ("0", JSONValue.int(0)),
        ("-0", .int(0)),
        ("1", .int(1)),
        ("-12", .int(-12)),
        ("1.5", .double(1.5)),
        ("-0.25", .double(-0.25)),
        ("1e5", .double(100_000)),
        ("1E+2", .double(100)),
        ("2.5e-3", .double(0.0025)),
        ("0.0", .double(0)),
        ("9223372036854775807", .int(Int.max)),
        ("9223372036854775808", .double(9_223_372_036_854_775_808)),
        ("1e308", .double(1e308)),
        (" \t\n\r true \n", .bool(true)),
        ("false", .bool(false)),
        ("null", .null),
        (#""""#, .string("")),
        (#""a\"b\\c\/d\b\f\n\r\t""#, .string("a\"b\\c/d\u{8}\u{c}\n\r\t")),
        (#""\u00e9\u6f22\ud83c\udf89""#, .string("é漢🎉")),
        ("\"é漢🎉\"", .string("é漢🎉")),
        ("[]", .array([])),
        ("[1, [2, [3]]]", .array([.int(1), .array([.int(2), .array([.int(3)])])])),
        (#"{}"#, .object([:])),
        (#"{"a": {"b": [true, null]}}"#, .object(["a": .object(["b": .array([.bool(true), .null])])])),
    ])
    func valid(text: String, value: JSONValue) throws {
        #expect(try JSONValue.parse(text) == value)
    }

    @Test("what RFC 8259 refuses is refused", arguments: [
        "", " ", "1.", "1.e5", ".5", "01", "-01", "00", "+1", "-", "1e", "1e+", "1.5e", "0x10", "1_000", "NaN", "Infinity",
        "-Infinity", "1e400", "-1e400", "tru", "nul", "True", "'a'", #""abc"#, "\"a\u{0}b\"", "\"a\nb\"", "\"a\tb\"",
        #""\x41""#, #""\u12""#, #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, "[1,]", "[,1]", "[1 2]", "{\"a\" 1}",
        "{\"a\": 1,}", "{a: 1}", "{\"a\": 1 \"b\": 2}", "[1]]", "{}}", "1 2", "\u{FEFF}1", "[", "{", "\"",
    ])
    func invalid(text: String) {
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(text) }
    }

    @Test("invalid UTF-8 in a string is refused")
    func invalidUTF8() {
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) } // an encoded surrogate
    }

    @Test("nesting is bounded: 512 levels read, deeper is refused without exhausting the stack")
    func depth() throws {
        let ok = String(repeating: "[", count: 511) + String(repeating: "]", count: 511)
        #expect(throws: Never.self) { try JSONValue.parse(ok) }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(deep) }
    }

    @Test("the writer's output reads back as the same value, escapes included")
    func roundTrip() throws {
        let values: [JSONValue] = [
            .string("quote \" backslash \\ slash / controls \u{0}\u{1}\u{1f} \n\r\t unicode é漢🎉"),
            .double(0.1), .double(-1.5e-7), .double(1e300), .double(123_456.75), .int(Int.min), .int(Int.max),
            .object(["nested": .array([.null, .bool(false), .object(["k": .string("v")])]), "": .int(0)]),
        ]
        for value in values {
            #expect(try JSONValue.parse(value.jsonString) == value, "\(value.jsonString)")
            #expect(try JSONValue.parse(value.jsonBytes(sortedKeys: false)) == value)
        }
        #expect(JSONValue.double(.infinity).jsonString == "null")
    }

    @Test("a member named twice in one object is reported with its path")
    func duplicateKeys() throws {
        let text = #"[{"a": 1, "b": {"c": 1, "c": 2}}, {"a": 1, "a": 2}, {"x": [{"y": 1, "y": 1}]}]"#
        let (value, duplicates) = try JSONValue.parseReportingDuplicates(Data(text.utf8))
        #expect(duplicates == ["[0].b.c", "[1].a", "[2].x[0].y"])
        #expect(value.arrayValue?[1]["a"] == .int(2))
        #expect(try JSONValue.parseReportingDuplicates(Data(#"{"a": {"a": 1}}"#.utf8)).duplicates.isEmpty)
    }
}
