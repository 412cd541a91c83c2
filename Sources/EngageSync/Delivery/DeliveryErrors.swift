import Foundation

/// The auth token's environment variable is not set: nothing was sent.
public struct MissingToken: Error, Sendable, CustomStringConvertible {
    public var destination: String
    public var variable: String
    public var description: String {
        "destination \(destination) reads its auth token from the environment variable \(variable), which is not set; nothing was sent"
    }
}

/// Vero answered 401/403: the credentials are wrong. Delivery to that destination stopped at once.
public struct CredentialsRejected: Error, Sendable, CustomStringConvertible {
    public var destination: String
    public var status: Int
    public var description: String {
        "destination \(destination) rejected the auth token (HTTP \(status)); delivery stopped, the rows stay pending. Check the token variable and run `engage-sync deliver` again"
    }
}
