import ArgumentParser
import EngageCore
import EngageStore
import Foundation

extension UnknownProfile: UserError {}

extension EngageSyncCommand {
    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Why a profile is (or is not) in an audience, or holds a trait's value, at an instant.",
            discussion: """
                Prints the definition's condition tree, each node with its verdict and its evidence (an event condition's \
                window, count and first and last matching events; a trait's value found; a referenced audience's own \
                explanation), or a computed trait's value and the events that made it, with the data as it is now; then \
                what is kept: the snapshot, the history, per destination the outbox rows and the ledger, and the Vero \
                email events. The same as `SELECT engage.explain(key, profile_id, at)`. Writes nothing.
                """)
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The definition's key.") var key: String
        @Option(name: .customLong("user-id"), help: "The profile with this user id.") var userID: String?
        @Option(help: "The profile with this email.") var email: String?
        @Option(name: .customLong("profile-id"), help: "The profile with this profile id.") var profileID: String?
        @Option(name: .customLong("as-of"), help: "Explain at this instant (ISO-8601) instead of now.") var asOf: String?
        @Flag(help: "Print the explanation as JSON (what engage.explain returns).") var json = false

        func validate() throws {
            guard [userID, email, profileID].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give one of --user-id, --email or --profile-id")
            }
        }

        func run() async throws {
            let at = try asOf.map { try RunInstant.parse($0, from: "--as-of") } ?? RunInstant.now()
            let reference: ProfileReference = userID.map { .userID($0) } ?? email.map { .email($0) } ?? .profileID(profileID ?? "")
            let explanation = try await database.withConnection { try await Explainer($0).explain(key: key, profile: reference, at: at) }
            print(json ? explanation.jsonString : ExplanationText(explanation).lines.joined(separator: "\n"))
        }
    }
}
