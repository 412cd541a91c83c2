import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("Interpolated queries, nested transactions and the connection pool")
struct QueryAndTransactionTests {
    @Test("an interpolated value is a numbered parameter; SQL text goes in only as unescaped; queries compose")
    func interpolation() {
        let id = 7, status = "pending'; DROP TABLE x; --"
        let query: PostgresQuery = "SELECT * FROM t WHERE id = \(id) AND status = \(status)"
        #expect(query.sql == "SELECT * FROM t WHERE id = $1 AND status = $2")
        #expect(query.binds == [PostgresBind(text: "7", type: .int8), PostgresBind(text: status)])

        let table = "engage.outbox"
        let inner: PostgresQuery = "SELECT id FROM \(unescaped: table) WHERE a = \(1) OR b = \(2)"
        let outer: PostgresQuery = "WITH q AS (\(inner)) SELECT * FROM q WHERE c = \(3) AND d = \(inner)"
        #expect(outer.sql == "WITH q AS (SELECT id FROM engage.outbox WHERE a = $1 OR b = $2) SELECT * FROM q WHERE c = $3 AND d = SELECT id FROM engage.outbox WHERE a = $4 OR b = $5")
        #expect(outer.binds.map(\.text) == ["1", "2", "3", "1", "2"])
        let joined = PostgresQuery.joined(["a = \(1)", "b = \(2)", "c"], separator: " AND ")
        #expect(joined.sql == "a = $1 AND b = $2 AND c")
        let optional: String? = nil
        let withNull: PostgresQuery = "x = \(optional)"
        #expect(withNull.binds == [.null])
    }

    @Test("composed queries run with every parameter where it belongs")
    func composedQueriesRun() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            let hostile = "x'); DROP TABLE t; --"
            let inner: PostgresQuery = "SELECT \(hostile)::text AS v, \(41) + 1 AS n"
            let row = try #require(try await db.query("SELECT v, n, \(true) AS b FROM (\(inner)) q").first)
            #expect(try row.decode(String.self, "v") == hostile)
            #expect(try row.decode(Int.self, "n") == 42)
            #expect(try row.decode(Bool.self, "b") == true)
        }
    }

    @Test("execute and copyIn refuse bound values: statements without parameters only")
    func executeRefusesBinds() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            let name = "t"
            let error = await #expect(throws: PostgresError.self) { try await db.execute("CREATE TABLE \(name) (n int)") }
            #expect(error?.kind == .usage)
            try await db.execute("CREATE TABLE \(unescaped: name) (n int)")
            #expect(try await db.query("SELECT count(*)::int AS c FROM t").first?.decode(Int.self, "c") == 0)
        }
    }

    @Test("a nested transaction is a savepoint: its rollback undoes only its own work")
    func nestedTransactions() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE t (n int)")
            struct Boom: Error {}
            try await db.withTransaction { tx in
                try await tx.query("INSERT INTO t VALUES (1)")
                await #expect(throws: Boom.self) {
                    try await tx.connection.withTransaction { inner in
                        try await inner.query("INSERT INTO t VALUES (2)")
                        throw Boom()
                    }
                }
                _ = try await tx.connection.withTransaction { inner in try await inner.query("INSERT INTO t VALUES (3)") }
            }
            #expect(try await db.query("SELECT n FROM t ORDER BY n").map { try $0.decode(Int.self, "n") } == [1, 3])
        }
    }

    @Test("a transaction can roll back on purpose and still return its value, nested or not")
    func rollbackOnPurpose() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("CREATE TABLE t (n int)")
            let counted = try await db.withTransaction { tx -> Int in
                try await tx.query("INSERT INTO t VALUES (1), (2)")
                let inner = try await tx.connection.withTransaction { inner -> Int in
                    try await inner.query("INSERT INTO t VALUES (3)")
                    inner.rollback()
                    return try await inner.query("SELECT count(*)::int AS c FROM t").first?.decode(Int.self, "c") ?? -1
                }
                #expect(inner == 3)
                tx.rollback()
                return try await tx.query("SELECT count(*)::int AS c FROM t").first?.decode(Int.self, "c") ?? -1
            }
            #expect(counted == 2)
            #expect(try await db.query("SELECT count(*)::int AS c FROM t").first?.decode(Int.self, "c") == 0)
        }
    }

    @Test("a failing commit is reported as the commit phase; the body's own errors pass through unchanged")
    func transactionPhases() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.execute("""
                CREATE TABLE p (id int PRIMARY KEY);
                CREATE TABLE c (p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);
                """)
            let commit = await #expect(throws: PostgresTransactionError.self) {
                try await db.withTransaction { tx in try await tx.query("INSERT INTO c VALUES (1)") }
            }
            #expect(commit?.phase == .commit)
            #expect((commit?.underlying as? PostgresError)?.sqlState == "23503")
            let body = await #expect(throws: PostgresError.self) {
                try await db.withTransaction { tx in try await tx.query("SELECT 1/0") }
            }
            #expect(body?.sqlState == "22012")
            // A transaction that cannot begin: BEGIN on a closed connection.
            let closed = try await PostgresConnection.connect(try TestDatabase.baseURL())
            await closed.close()
            let begin = await #expect(throws: PostgresTransactionError.self) {
                try await closed.withTransaction { _ in 1 }
            }
            #expect(begin?.phase == .begin)
            #expect(try await db.query("SELECT count(*)::int AS c FROM c").first?.decode(Int.self, "c") == 0)
        }
    }

    @Test("the pool reuses clean connections, resets what a lease left behind, and waits when all are leased")
    func pool() async throws {
        try await TestDatabase.with(migrated: false) { _, url in
            let pool = PostgresConnectionPool(conninfo: url, maxConnections: 2)
            let first = try await pool.withConnection { db -> Int32 in
                try await db.execute("CREATE TEMP TABLE scratch (n int); SET statement_timeout = '1s'")
                _ = try await db.query("SELECT pg_advisory_lock(42)")
                return db.backendPID
            }
            try await pool.withConnection { (db) async throws in
                #expect(db.backendPID == first, "the idle connection is reused")
                #expect(try await db.query("SELECT to_regclass('pg_temp.scratch') IS NULL AS gone").first?.decode(Bool.self, "gone") == true)
                #expect(try await db.query("SHOW statement_timeout").first?["statement_timeout"] == "0")
                #expect(try await db.query("SELECT count(*)::int AS c FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").first?.decode(Int.self, "c") == 0)
                #expect(try await db.query("SHOW TimeZone").first?["TimeZone"] == "UTC", "the session defaults survive the reset")
            }
            // A lease that throws closes its connection instead of returning it.
            struct Boom: Error {}
            await #expect(throws: Boom.self) { try await pool.withConnection { _ in throw Boom() } }
            let next = try await pool.withConnection { $0.backendPID }
            #expect(next != first)
            // Three at once through two connections: the third waits for a release.
            let peak = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        try await pool.withConnection { db in
                            try await db.query("SELECT pg_sleep(0.2)")
                            return try await db.query("SELECT count(*)::int AS c FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'")
                                .first?.decode(Int.self, "c") ?? 0
                        }
                    }
                }
                var peak = 0
                for try await n in group { peak = max(peak, n) }
                return peak
            }
            #expect(peak <= 3, "at most two pooled connections (plus the fixture's own)")
            await pool.close()
            await #expect(throws: PostgresError.self) { try await pool.withConnection { _ in 1 } }
        }
    }
}
