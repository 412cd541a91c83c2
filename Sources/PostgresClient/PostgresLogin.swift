import CLibPQ

/// A password that cannot be printed: `description`, `debugDescription` and a `dump` show
/// `<redacted>`; only the connection code reads it.
public struct PostgresPassword: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: []) }
}

/// Another login to the same server and database as a conninfo: the conninfo's user and
/// password are replaced by these. Without a password, libpq finds one as `psql` does for that
/// user (`PGPASSWORD`, else the password file, `~/.pgpass` or `PGPASSFILE`).
public struct PostgresLogin: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var password: PostgresPassword?

    public init(user: String, password: PostgresPassword? = nil) {
        self.user = user
        self.password = password
    }

    public var description: String { user }

    public static func == (a: Self, b: Self) -> Bool { a.user == b.user && a.password?.value == b.password?.value }
    public func hash(into hasher: inout Hasher) { hasher.combine(user) }

    /// `conninfo`'s parameters without its user and password, then this login's: the keys
    /// and values to connect with (nil when libpq cannot parse `conninfo`, with its message).
    func parameters(replacingLoginOf conninfo: String?) -> (keys: [String], values: [String])? {
        var keys: [String] = [], values: [String] = []
        if let conninfo, !conninfo.isEmpty {
            var error: UnsafeMutablePointer<CChar>?
            guard let options = PQconninfoParse(conninfo, &error) else {
                if let error { PQfreemem(error) }
                return nil
            }
            defer { PQconninfoFree(options) }
            var option = options
            while let keyword = option.pointee.keyword {
                let key = String(cString: keyword)
                if let value = option.pointee.val, key != "user", key != "password" {
                    keys.append(key)
                    values.append(String(cString: value))
                }
                option += 1
            }
        }
        keys.append("user")
        values.append(user)
        if let password {
            keys.append("password")
            values.append(password.value)
        }
        return (keys, values)
    }
}
