import Foundation

/// The auth token's environment variable is not set: nothing was sent.
public struct MissingToken: Error, Sendable, CustomStringConvertible {
    public var destination: String
    public var variable: String
    public var description: String {
        "destination \(destination) reads its auth token from the environment variable \(variable), which is not set; nothing was sent"
    }
}

/// Vero answered 401/403: the credentials are wrong. Delivery to that destination stopped at once
/// and the destination is paused (docs/operations.md#running-as-a-service-engage-sync-serve).
public struct CredentialsRejected: Error, Sendable, CustomStringConvertible {
    public var destination: String
    public var status: Int
    public var description: String {
        "destination \(destination) rejected the auth token (HTTP \(status)); delivery stopped and the destination is paused, the rows stay pending. Fix the token variable, then `engage-sync destination resume \(destination)`"
    }
}
