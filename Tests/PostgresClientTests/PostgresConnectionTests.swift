import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("PostgresConnection against a real PostgreSQL")
struct PostgresConnectionTests {
    @Test("another login to the same database: the session user is that login; its password never prints")
    func anotherLogin() async throws {
        try await TestDatabase.with(migrated: false) { db, url in
            let role = "login_\(UUID().uuidString.prefix(8).lowercased())"
            try await db.execute("CREATE ROLE \(unescaped: role) LOGIN")
            do {
                let password = PostgresPassword("s3cret-\u{fc}")
                let login = PostgresLogin(user: role, password: password)
                // The URL's own user (the test's superuser) is replaced, not kept beside it.
                let other = try await PostgresConnection.connect(url, login: login)
                let row = try #require(try await other.query("SELECT session_user::text AS s, current_database()::text AS d").first)
                #expect(try row.decode(String.self, "s") == role)
                #expect(try row.decode(String.self, "d") == (try await db.query("SELECT current_database()::text AS d").first?.decode(String.self, "d")))
                await other.close()
                let pool = PostgresConnectionPool(conninfo: url, login: login, maxConnections: 1)
                #expect(try await pool.withConnection { try await $0.query("SELECT session_user::text AS s").first?.decode(String.self, "s") } == role)
                await pool.close()
                var dumped = ""
                dump(login, to: &dumped)
                for text in ["\(password)", String(reflecting: password), "\(login)", String(reflecting: login), dumped] {
                    #expect(!text.contains("s3cret"), "\(text)")
                }
            } catch {
                Issue.record(error)
            }
            try await db.execute("DROP ROLE \(unescaped: role)")
        }
    }

    @Test("binds every supported type, including NULL, and decodes it back")
    func bindsAndDecodesEveryType() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            let tricky = "it's a \"quote\", a \\backslash\\, tab\t, newline\n, unicode é漢🎉, $1; -- not a comment"
            let date = Date(timeIntervalSince1970: 1_700_000_000.123456)
            let json = PostgresJSON(rawJSON: #"{"a": [1, "x'y"]}"#)
            let array = ["plain", "with \"quote\"", "back\\slash", "comma,brace}", ""]
            let row = try #require(try await db.query("""
                SELECT \(tricky)::text AS s, \(42) AS i, \(3.25) AS d, \(true) AS b, \(date) AS ts, \(json)::jsonb AS j,
                       \(array) AS arr, \(Optional<String>.none)::text AS n, \(Optional<Int>.none)::int AS ni,
                       \(Int32(-7)) AS i32, \(-9_223_372_036_854_775_807) AS neg
                """).first)
            #expect(try row.decode(String.self, "s") == tricky)
            #expect(try row.decode(Int.self, "i") == 42)
            #expect(try row.decode(Double.self, "d") == 3.25)
            #expect(try row.decode(Bool.self, "b") == true)
            let decodedDate = try row.decode(Date.self, "ts")
            #expect(abs(decodedDate.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_002)
            struct Doc: Decodable, Equatable { var a: [Item]
                enum Item: Decodable, Equatable { case int(Int), string(String)
                    init(from decoder: Decoder) throws {
                        let c = try decoder.singleValueContainer()
                        if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .string(try c.decode(String.self)) }
                    }
                }
            }
            #expect(try row.decodeJSON(Doc.self, "j") == Doc(a: [.int(1), .string("x'y")]))
            #expect(try row.decode([String].self, "arr") == ["plain", "with \"quote\"", "back\\slash", "comma,brace}", ""])
            #expect(try row.decode(String?.self, "n") == nil)
            #expect(try row.decode(Int?.self, "ni") == nil)
            #expect(try row.decode(Int32.self, "i32") == -7)
            #expect(try row.decode(Int.self, "neg") == -9_223_372_036_854_775_807)
            #expect(throws: PostgresError.self) { try row.decode(String.self, "n") }
            #expect(throws: PostgresError.self) { try row.decode(Int.self, "s") }
        }
    }

    @Test("a bound string is data, never SQL")
    func boundStringsAreNotInterpreted() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE t (v text)")
            let hostile = "x'); DROP TABLE t; --"
            try await db.query("INSERT INTO t VALUES (\(hostile))")
            let rows = try await db.query("SELECT v FROM t WHERE v = \(hostile)")
            #expect(rows.count == 1)
            #expect(try rows.first?.decode(String.self, "v") == hostile)
        }
    }

    @Test("execute runs a multi-statement script")
    func multiStatementExecute() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("""
                CREATE TABLE a (n int);
                INSERT INTO a VALUES (1), (2);
                INSERT INTO a SELECT n + 10 FROM a;
                """)
            let sum = try await db.query("SELECT sum(n)::int AS s FROM a").first?.decode(Int.self, "s")
            #expect(sum == 1 + 2 + 11 + 12)
            await #expect(throws: PostgresError.self) { try await db.execute("SELECT 1; SELECT nope; SELECT 2") }
        }
    }

    @Test("withTransaction commits, and rolls back when the body throws")
    func transactions() async throws {
        struct Boom: Error {}
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE t (n int)")
            _ = try await db.withTransaction { tx in try await tx.query("INSERT INTO t VALUES (1)") }
            await #expect(throws: Boom.self) {
                try await db.withTransaction { tx in
                    try await tx.query("INSERT INTO t VALUES (2)")
                    throw Boom()
                }
            }
            await #expect(throws: PostgresError.self) {
                try await db.withTransaction { tx in
                    try await tx.query("INSERT INTO t VALUES (3)")
                    try await tx.query("INSERT INTO t VALUES ('not a number')")
                }
            }
            let values = try await db.query("SELECT n FROM t ORDER BY n").map { try $0.decode(Int.self, "n") }
            #expect(values == [1])
            // The connection is usable after a rollback.
            #expect(try await db.query("SELECT 1 AS one").first?.decode(Int.self, "one") == 1)
        }
    }

    @Test("withTransaction rolls back when the task is cancelled")
    func transactionRollsBackOnCancellation() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE t (n int)")
            let task = Task {
                try await db.withTransaction { tx in
                    try await tx.query("INSERT INTO t VALUES (1)")
                    withUnsafeCurrentTask { $0?.cancel() }
                }
            }
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(try await db.query("SELECT count(*)::int AS c FROM t").first?.decode(Int.self, "c") == 0)
        }
    }

    @Test("COPY FROM STDIN loads 100,000 rows with escaped values")
    func copyHundredThousandRows() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE c (id int PRIMARY KEY, label text, note text)")
            let copied = try await db.copyIn("COPY c (id, label, note) FROM STDIN") { writer in
                for i in 0..<100_000 {
                    try await writer.writeRow([String(i), "row \(i)\twith\\tab\nand newline", i % 10 == 0 ? nil : "n"])
                }
            }
            #expect(copied == 100_000)
            let row = try #require(try await db.query(
                "SELECT count(*)::int AS c, count(note)::int AS notes, max(label) FILTER (WHERE id = 7) AS l FROM c").first)
            #expect(try row.decode(Int.self, "c") == 100_000)
            #expect(try row.decode(Int.self, "notes") == 90_000)
            #expect(try row.decode(String.self, "l") == "row 7\twith\\tab\nand newline")
        }
    }

    @Test("a failing COPY surfaces the server's error and leaves the connection usable")
    func copyError() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE c (id int)")
            let error = await #expect(throws: PostgresError.self) {
                try await db.copyIn("COPY c FROM STDIN") { try await $0.writeRow(["not an int"]) }
            }
            #expect(error?.sqlState == "22P02")
            #expect(try await db.query("SELECT 1 AS one").first?.decode(Int.self, "one") == 1)
        }
    }

    @Test("a unique violation surfaces SQLSTATE 23505 with detail and statement")
    func sqlStateSurfaces() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE u (k text PRIMARY KEY)")
            try await db.query("INSERT INTO u VALUES (\("a"))")
            let error = await #expect(throws: PostgresError.self) {
                try await db.query("INSERT INTO u VALUES (\("a"))")
            }
            #expect(error?.sqlState == "23505")
            #expect(error?.kind == .server)
            #expect(error?.detail?.contains("(k)=(a)") == true)
            #expect(error?.statement?.contains("INSERT INTO u") == true)
            #expect(error?.description.contains("23505") == true)
        }
    }

    @Test("a connection error names host, port and database, never the password")
    func connectionErrorIsReadable() async throws {
        let error = await #expect(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect("postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2")
        }
        let text = error?.description ?? ""
        #expect(error?.kind == .connection)
        #expect(text.contains("127.0.0.1:1/nowhere"))
        #expect(!text.contains("s3cret-pw"))
    }

    @Test("notices reach the handler")
    func notices() async throws {
        let url = try TestDatabase.baseURL()
        let box = NoticeCollector()
        let db = try await PostgresConnection.connect(url, onNotice: { box.add($0.message) })
        try await db.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        await db.close()
        #expect(box.messages == ["hello 42"])
    }
}

final class NoticeCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func add(_ message: String) { lock.withLock { stored.append(message) } }
    var messages: [String] { lock.withLock { stored } }
}
