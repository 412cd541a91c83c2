import Foundation

/// The key rule (docs/definitions.md#keys): how a definition's name becomes its trait key, and what a key may be.
public enum Keys {
    /// Trait names the destination owns; a definition may not use them as its key.
    public static let reserved: Set<String> = ["id", "user_id", "email", "created_at", "tags", "timezone"]

    public static let maxLength = 255

    /// `key_for(name)`: fold to ASCII, split camelCase, lowercase, runs of anything but `a-z0-9`
    /// become one `_`, trimmed. "Order Completed Last 30days" → `order_completed_last_30days`.
    /// Returns nil when nothing usable is left (e.g. a name of only punctuation or emoji).
    public static func key(forName name: String) -> String? {
        let scalars = Array(foldToASCII(name).unicodeScalars)
        var spaced = String.UnicodeScalarView()
        for (i, c) in scalars.enumerated() {
            if i > 0, isUpper(c) {
                let prev = scalars[i - 1]
                let nextIsLower = i + 1 < scalars.count && isLower(scalars[i + 1])
                // lastOrderAt → last Order At; HTMLParser → HTML Parser; 30Days → 30 Days
                if isLower(prev) || isDigit(prev) || (isUpper(prev) && nextIsLower) {
                    spaced.append(" ")
                }
            }
            spaced.append(c)
        }
        var key = ""
        var pendingSeparator = false
        for c in String(spaced).lowercased().unicodeScalars {
            if (c >= "a" && c <= "z") || isDigit(c) {
                if pendingSeparator && !key.isEmpty { key.append("_") }
                pendingSeparator = false
                key.unicodeScalars.append(c)
            } else {
                pendingSeparator = true
            }
        }
        return key.isEmpty ? nil : key
    }

    /// Why `key` is not a valid key, or nil when it is.
    public static func problem(with key: String) -> String? {
        if key.isEmpty { return "must not be empty" }
        if key.count > maxLength { return "must be at most \(maxLength) characters, got \(key.count)" }
        if key.range(of: "^[a-z0-9]+(_[a-z0-9]+)*$", options: .regularExpression) == nil {
            return "must match ^[a-z0-9]+(_[a-z0-9]+)*$ (lowercase letters, digits, single underscores between them), got \(key.debugDescription)"
        }
        if reserved.contains(key) {
            return "\(key.debugDescription) is a reserved trait name (\(reserved.sorted().joined(separator: ", ")))"
        }
        return nil
    }

    /// Decomposes accents away (é → e) and spells out a few letters that have no decomposition.
    static func foldToASCII(_ text: String) -> String {
        let special: [Unicode.Scalar: String] = [
            "ß": "ss", "æ": "ae", "Æ": "Ae", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "Oe", "ł": "l", "Ł": "L",
            "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ı": "i",
        ]
        var out = String.UnicodeScalarView()
        for scalar in text.decomposedStringWithCanonicalMapping.unicodeScalars {
            if scalar.isASCII {
                out.append(scalar)
            } else if let replacement = special[scalar] {
                out.append(contentsOf: replacement.unicodeScalars)
            } else if scalar.properties.generalCategory == .nonspacingMark {
                continue
            } else {
                out.append(" ")
            }
        }
        return String(out)
    }

    private static func isUpper(_ c: Unicode.Scalar) -> Bool { c >= "A" && c <= "Z" }
    private static func isLower(_ c: Unicode.Scalar) -> Bool { c >= "a" && c <= "z" }
    private static func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }
}
