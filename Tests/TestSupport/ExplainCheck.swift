import EngageCore
import Foundation
import PostgresClient

/// Where `engage.explain` decides otherwise than an evaluation did.
public enum ExplainCheck {
    /// For every profile in `engage.profiles`, explain's `value` for `key` at `at` against
    /// `decided` (profile → value text; absent: no value): one line per profile that differs.
    public static func disagreements(_ db: PostgresConnection, key: String, at: Date, decided: [String: String]) async throws -> [String] {
        try await db.query("""
            SELECT p.profile_id, nullif(engage.explain(\(key), p.profile_id, \(at)::timestamptz) -> 'value', 'null')::text AS value
            FROM engage.profiles p ORDER BY p.profile_id
            """).compactMap { row in
            let profile = try row.decode(String.self, "profile_id"), value = try row.decode(String?.self, "value")
            return value == decided[profile] ? nil : "\(profile): explain \(value ?? "no value"), evaluation \(decided[profile] ?? "no value")"
        }
    }
}
