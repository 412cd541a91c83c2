import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

/// Builds profiles and events in a test database and evaluates definitions against them.
struct Fixture {
    let db: PostgresConnection
    /// The evaluation time of every definition in these tests.
    static let now = Date(timeIntervalSince1970: 1_748_736_000) // 2025-06-01T00:00:00Z

    static func ago(days: Double = 0, seconds: Double = 0) -> Date {
        now.addingTimeInterval(-(days * 86_400 + seconds))
    }

    private static let counter = Counter()

    /// A profile; by default identified by a user id equal to its profile id.
    func profile(_ id: String, userID: String?? = .none, email: String? = nil, traits: String = "{}") async throws {
        let user: String? = userID ?? id
        try await db.query("""
            INSERT INTO engage.profiles (profile_id, user_id, email, traits)
            VALUES (\(id), \(user), \(email), \(PostgresJSON(rawJSON: traits))::jsonb)
            """)
    }

    func event(_ profile: String, _ name: String, at: Date, properties: String = "{}") async throws {
        try await db.query("""
            INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
            VALUES (\("m\(Self.counter.next())"), \(profile), \(name), \(PostgresJSON(rawJSON: properties))::jsonb, \(at))
            """)
    }

    /// Parses, stores (so other definitions can refer to it) and evaluates a definition.
    @discardableResult
    func evaluate(_ json: String) async throws -> [String: String] {
        let definition = try DefinitionParser.parse(try JSONValue.parse(json)).get()
        let repository = DefinitionRepository(db)
        _ = try await repository.save([DefinitionInput(definition: definition, location: "test")])
        let result = try await repository.evaluate(definition, now: Self.now)
        try await explainAgrees(definition.key, result)
        return result
    }

    /// `engage.explain` decides every profile as the evaluation did (`result`: profile → value
    /// text), so each semantics test also checks the explanation.
    func explainAgrees(_ key: String, _ result: [String: String]) async throws {
        let wrong = try await ExplainCheck.disagreements(db, key: key, at: Self.now, decided: result)
        #expect(wrong.isEmpty, "\(key): \(wrong)")
    }

    /// The members of an audience given by its condition.
    func members(_ condition: String, includeAnonymous: Bool = false) async throws -> Set<String> {
        let key = "a\(Self.counter.next())"
        let result = try await evaluate("""
            {"name": "\(key)", "key": "\(key)", "type": "audience", "include_anonymous": \(includeAnonymous), "condition": \(condition)}
            """)
        #expect(result.values.allSatisfy { $0 == "true" })
        return Set(result.keys)
    }

    /// Each profile's value of a trait given by its value spec.
    func values(_ value: String) async throws -> [String: String] {
        let key = "t\(Self.counter.next())"
        return try await evaluate(#"{"name": "\#(key)", "key": "\#(key)", "type": "trait", "value": \#(value)}"#)
    }
}
