import EngageCore
import Testing

@Suite("The key rule")
struct KeysTests {
    static let cases: [(String, String?)] = [
        ("Order Completed Last 30days", "order_completed_last_30days"),
        ("Dormant Shoppers!", "dormant_shoppers"),
        ("VIP – Tier 2", "vip_tier_2"),
        ("lastOrderAt", "last_order_at"),
        ("LastOrderAt", "last_order_at"),
        ("HTMLParser", "html_parser"),
        ("userID", "user_id"),
        ("order30Days", "order30_days"),
        ("already_snake_case", "already_snake_case"),
        ("kebab-case-name", "kebab_case_name"),
        ("  leading and trailing  ", "leading_and_trailing"),
        ("__under__scores__", "under_scores"),
        ("many   spaces\tand\ttabs", "many_spaces_and_tabs"),
        ("Punctuation: a, b; c.", "punctuation_a_b_c"),
        ("Café Régulier", "cafe_regulier"),
        ("Ünïcödé Àccents", "unicode_accents"),
        ("Straße", "strasse"),
        ("Søren Ærø", "soren_aero"),
        ("Łódź Fans", "lodz_fans"),
        ("naïve résumé", "naive_resume"),
        ("123 Go", "123_go"),
        ("2024", "2024"),
        ("A", "a"),
        ("ABC", "abc"),
        ("A/B test group", "a_b_test_group"),
        ("Price > $100", "price_100"),
        ("50% off", "50_off"),
        ("e-mail opened (7d)", "e_mail_opened_7d"),
        ("Top 10% Spenders", "top_10_spenders"),
        ("first.last", "first_last"),
        ("Emoji 🎉 Party", "emoji_party"),
        ("漢字 only and latin", "only_and_latin"),
        ("!!!", nil),
        ("🎉🎉", nil),
        ("", nil),
        ("   ", nil),
        ("漢字", nil),
    ]

    @Test("key_for(name)", arguments: cases)
    func keyForName(name: String, expected: String?) {
        #expect(Keys.key(forName: name) == expected)
    }

    @Test("keys that are valid")
    func validKeys() {
        for key in ["a", "order_completed_last_30days", "x1_y2", String(repeating: "a", count: 255)] {
            #expect(Keys.problem(with: key) == nil, "\(key)")
        }
    }

    @Test("keys that are not: pattern, length, reserved")
    func invalidKeys() {
        for key in ["", "A", "a__b", "_a", "a_", "a-b", "a b", "é", String(repeating: "a", count: 256),
                    "id", "user_id", "email", "created_at", "tags", "timezone"] {
            #expect(Keys.problem(with: key) != nil, "\(key)")
        }
        #expect(Keys.problem(with: "email")?.contains("reserved") == true)
    }

    @Test("a derived key always satisfies the pattern")
    func derivedKeysAreValid() {
        for (name, expected) in Self.cases where expected != nil {
            if let key = Keys.key(forName: name), !Keys.reserved.contains(key) {
                #expect(Keys.problem(with: key) == nil, "\(name) → \(key)")
            }
        }
    }
}
