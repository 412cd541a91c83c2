import EngageCore
import Foundation
import PostgresClient

/// A profile as `explain` is asked about it.
public enum ProfileReference: Sendable, Hashable, CustomStringConvertible {
    case userID(String)
    case email(String)
    case profileID(String)

    public var description: String {
        switch self {
        case .userID(let id): "the user id \(id.debugDescription)"
        case .email(let email): "the email \(email.debugDescription)"
        case .profileID(let id): "the profile id \(id.debugDescription)"
        }
    }
}

/// No profile answers to a reference: none in `engage.profiles`, and nothing kept about one
/// (snapshot, history, ledger, outbox) for a profile since deleted.
public struct UnknownProfile: Error, Sendable, CustomStringConvertible {
    public var reference: ProfileReference
    public var description: String { "no profile has \(reference)" }
}

/// Why a profile holds (or does not hold) a definition at an instant
/// (docs/analysts.md#why-is-a-profile-in-an-audience): `engage.explain`, the one
/// implementation, which the command line, the status page and analysts' SQL share.
public struct Explainer: Sendable {
    let db: PostgresConnection

    public init(_ db: PostgresConnection) { self.db = db }

    /// The explanation of `key` for the profile `reference` names, at `at`, as
    /// `engage.explain` returns it. Throws ``UnknownKey`` for a key no active definition has
    /// and ``UnknownProfile`` for a profile nothing knows.
    public func explain(key: String, profile reference: ProfileReference, at: Date) async throws -> JSONValue {
        _ = try await DefinitionRepository(db).active(key: key)
        let profileID = try await profileID(reference)
        do {
            // Read only, instants in UTC whatever the server's TimeZone.
            let text = try await db.withTransaction { tx -> String? in
                tx.rollback()
                try await tx.execute("SET TRANSACTION READ ONLY; SET LOCAL TimeZone = 'UTC'")
                return try await tx.query("SELECT engage.explain(\(key), \(profileID), \(at)::timestamptz)::text AS e")
                    .first?.decode(String.self, "e")
            }
            guard let text else { throw UnknownProfile(reference: reference) }
            return try JSONValue.parse(text)
        } catch let error as PostgresError where error.sqlState == "22023" && error.message.hasPrefix("no profile has") {
            throw UnknownProfile(reference: reference)
        }
    }

    /// The profile id a reference names: a profile's; for a user id or email no profile has
    /// now, the profile the ledger (then the outbox) last recorded for it as a Vero id or email,
    /// so a deleted profile can still be explained. Of several profiles sharing an email, the
    /// one with a user id, then the first by profile id (as SQL definitions match them).
    public func profileID(_ reference: ProfileReference) async throws -> String {
        // The profiles' column and the ledger's and outbox's that hold the same identifier.
        let (value, profileColumn, keptColumn): (String, String, String)
        switch reference {
        case .profileID(let id): return id
        case .userID(let id): (value, profileColumn, keptColumn) = (id, "user_id", "vero_id")
        case .email(let email): (value, profileColumn, keptColumn) = (email, "email", "email")
        }
        let query: PostgresQuery = """
            SELECT profile_id FROM (
                (SELECT profile_id, 0 AS source FROM engage.profiles WHERE \(unescaped: profileColumn) = \(value)
                 ORDER BY user_id IS NULL, profile_id LIMIT 1)
                UNION ALL
                (SELECT profile_id, 1 FROM engage.ledger WHERE \(unescaped: keptColumn) = \(value) ORDER BY confirmed_at DESC LIMIT 1)
                UNION ALL
                (SELECT profile_id, 2 FROM engage.outbox WHERE \(unescaped: keptColumn) = \(value) ORDER BY id DESC LIMIT 1)) found
            ORDER BY source LIMIT 1
            """
        guard let id = try await db.query(query).first?.decode(String.self, "profile_id") else {
            throw UnknownProfile(reference: reference)
        }
        return id
    }
}
