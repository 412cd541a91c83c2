import EngageCore
import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport
import VeroSandbox

/// SQL audiences and traits (docs/definitions.md#sql-audiences-and-sql-traits-your-own-tables) over
/// the user's own tables, through the
/// CLI: syncing and resyncing what the tables say, safety, failures that stay in their pair,
/// identity, the guardrail, references and preview.
@Suite("SQL audiences and traits")
struct SQLDefinitionTests {
    static let t0 = "2026-06-01T12:00:00Z"

    /// The user's own tables: `app.users` (id text, email), `app.ltv` (user_id, ltv),
    /// `app.subscriptions` (user_id, plan, active). u1…u3 are also engage profiles p1…p3.
    func seed(_ f: SyncFixture) async throws {
        try await f.db.execute("""
            CREATE SCHEMA app;
            CREATE TABLE app.users (id text PRIMARY KEY, email text);
            CREATE TABLE app.ltv (user_id text PRIMARY KEY, ltv numeric NOT NULL);
            CREATE TABLE app.subscriptions (user_id text PRIMARY KEY, plan text, active boolean NOT NULL);
            INSERT INTO app.users SELECT 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, 6) i;
            INSERT INTO app.ltv VALUES ('u1', 5000), ('u2', 200), ('u3', 1500), ('u4', 3000);
            INSERT INTO app.subscriptions VALUES ('u1', 'pro', true), ('u2', 'team', true), ('u3', 'pro', false), ('u5', 'free', true);
            INSERT INTO engage.profiles (profile_id, user_id) SELECT 'p' || i, 'u' || i FROM generate_series(1, 3) i;
            """)
    }

    static let highLTV = #"""
        {"name": "High LTV", "type": "audience",
         "sql": "SELECT u.id AS user_id, u.email FROM app.users u JOIN app.ltv l ON l.user_id = u.id WHERE l.ltv > 1000;"}
        """#
    static let plan = #"""
        {"name": "Plan", "type": "trait", "sql": "SELECT user_id, plan AS value FROM app.subscriptions WHERE active"}
        """#

    @discardableResult
    func run(_ f: SyncFixture, at instant: String, expect status: Int32 = 0, _ extra: [String] = []) async throws -> CLIRun {
        let run = try await f.cli(["run", "--all"] + extra, environment: ["ENGAGE_SYNC_NOW": instant])
        #expect(run.status == status, "\(run.stdout)\n\(run.stderr)")
        return run
    }

    /// What the last run of `key` recorded.
    func lastRun(_ f: SyncFixture, _ key: String) async throws -> (status: String, error: String?, created: Int) {
        let row = try #require(try await f.db.query("""
            SELECT r.status, r.error, r.created_profiles FROM engage.sync_runs r
            JOIN engage.computations c ON c.id = r.computation_id WHERE c.key = \(key) ORDER BY r.id DESC LIMIT 1
            """).first)
        return (try row.decode(String.self, "status"), try row.decode(String?.self, "error"), try row.decode(Int.self, "created_profiles"))
    }

    /// What the last run of `key` enqueued: `user id → value` (JSON text).
    func lastEnqueued(_ f: SyncFixture, _ key: String) async throws -> [String: String] {
        var out: [String: String] = [:]
        for row in try await f.db.query("""
            SELECT o.vero_id AS user_id, o.value::text AS value FROM engage.outbox o
            WHERE o.run_id = (SELECT max(r.id) FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
                              WHERE c.key = \(key))
            """) {
            out[try row.decode(String.self, "user_id")] = try row.decode(String.self, "value")
        }
        return out
    }

    /// A fingerprint of a table's content.
    func fingerprint(_ f: SyncFixture, _ table: String) async throws -> String {
        try await f.db.query("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) AS h FROM \(unescaped: table) t")
            .first?.decode(String.self, "h") ?? ""
    }

    @Test("an audience and a trait over the user's tables: first sync, then exactly the entries, exits and changed values")
    func syncsUserTables() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.define(Self.highLTV)
            try await f.define(Self.plan)
            try await run(f, at: Self.t0)

            // Unknown user ids became profiles (u4 from the audience with its email; u5 from the
            // trait), counted on the runs, and the known profiles' missing emails were filled.
            #expect(try await lastRun(f, "high_ltv").created == 1)
            #expect(try await lastRun(f, "plan").created == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles WHERE profile_id IN ('u4', 'u5')") == 2)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles WHERE user_id = 'u4' AND email = 'u4@example.com'") == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles WHERE user_id = 'u1' AND email = 'u1@example.com'") == 1)
            var users = try await f.sandboxUsers()
            #expect(Set(users.filter { $0.value.data["high_ltv"] == .bool(true) }.keys) == ["u1", "u3", "u4"])
            #expect(users["u4"]?.data["high_ltv"] == .bool(true))
            #expect(users["u5"]?.data["plan"] == .string("free"))
            #expect(users["u1"]?.data["plan"] == .string("pro"))
            #expect(users["u3"]?.data["plan"] == nil)

            // The tables change: u1 falls below 1000 (exit), u6 rises (entry, a new profile);
            // u2 changes plan, u1 cancels (its value goes to null), u3 reactivates.
            try await f.db.execute("""
                UPDATE app.ltv SET ltv = 10 WHERE user_id = 'u1';
                INSERT INTO app.ltv VALUES ('u6', 9000);
                UPDATE app.subscriptions SET plan = 'enterprise' WHERE user_id = 'u2';
                UPDATE app.subscriptions SET active = false WHERE user_id = 'u1';
                UPDATE app.subscriptions SET active = true WHERE user_id = 'u3';
                """)
            try await run(f, at: "2026-06-01T14:00:00Z")
            #expect(try await lastEnqueued(f, "high_ltv") == ["u1": "false", "u6": "true"])
            #expect(try await lastEnqueued(f, "plan") == ["u1": "null", "u2": "\"enterprise\"", "u3": "\"pro\""])
            #expect(try await lastRun(f, "high_ltv").created == 1)
            users = try await f.sandboxUsers()
            #expect(users["u1"]?.data["high_ltv"] == .bool(false))
            #expect(users["u6"]?.data["high_ltv"] == .bool(true))
            #expect(users["u2"]?.data["plan"] == .string("enterprise"))
            for key in ["high_ltv", "plan"] {
                let wrong = try await f.wrongHolders(key: key, exit: key == "plan" ? .null : .bool(false))
                #expect(wrong.sandbox.isEmpty, "\(key): \(wrong.sandbox)")
                #expect(wrong.ledger.isEmpty, "\(key): \(wrong.ledger)")
            }

            // Nothing changed: nothing is sent.
            try await run(f, at: "2026-06-01T16:00:00Z")
            #expect(try await lastEnqueued(f, "high_ltv").isEmpty)
            #expect(try await lastEnqueued(f, "plan").isEmpty)
        }
    }

    @Test("a query that tries to write fails with a message and changes nothing")
    func cannotWrite() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.db.execute("""
                CREATE FUNCTION app.purge() RETURNS int LANGUAGE sql AS 'DELETE FROM app.users RETURNING 1';
                """)
            let attempts = [
                ("purge", "SELECT id AS user_id FROM app.users WHERE app.purge() IS NOT NULL"),
                ("lock", "SELECT id AS user_id FROM app.users FOR UPDATE"),
                ("cte", "WITH gone AS (DELETE FROM app.users RETURNING id) SELECT id AS user_id FROM gone"),
            ]
            // `define` refuses what it can see without running the query for rows.
            for (key, sql) in attempts where key != "purge" {
                let path = FileManager.default.temporaryDirectory.appendingPathComponent("def-\(UUID()).json").path
                try JSONValue.object(["name": .string(key), "type": .string("audience"), "sql": .string(sql)]).jsonString
                    .write(toFile: path, atomically: true, encoding: .utf8)
                let define = try await f.cli(["define", path])
                #expect(define.status == 2, "\(key): \(define.stdout)")
                #expect(define.stderr.contains("\(path):sql:"), "\(define.stderr)")
            }
            // Stored anyway (as if the tables changed after `define`), each fails when run.
            for (key, sql) in attempts {
                let document = JSONValue.object(["name": .string(key), "key": .string(key), "type": .string("audience"), "sql": .string(sql)])
                try await f.db.query("""
                    INSERT INTO engage.computations (key, name, type, definition)
                    VALUES (\(key), \(key), 'audience', \(PostgresJSON(rawJSON: document.jsonString))::jsonb)
                    """)
            }
            let before = try await fingerprint(f, "app.users")
            let output = try await run(f, at: Self.t0, expect: 1)
            #expect(try await fingerprint(f, "app.users") == before)
            #expect(try await f.count("SELECT count(*)::int AS c FROM app.users") == 6)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox") == 0)
            for (key, _) in attempts {
                let last = try await lastRun(f, key)
                #expect(last.status == "failed", "\(key)")
                #expect(last.error?.contains("SQL definition \(key):") == true, "\(key): \(last.error ?? "-")")
            }
            #expect(try await lastRun(f, "purge").error?.contains("read-only") == true)
            #expect(try await lastRun(f, "lock").error?.contains("FOR UPDATE") == true)
            #expect(try await lastRun(f, "cte").error?.contains("data-modifying") == true)
            #expect(output.stderr.contains("SQL definition"))
        }
    }

    @Test("under ENGAGE_SQL_ROLE a query reads only what that role may; a refusal fails its pair only")
    func role() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            // Roles belong to the cluster, which parallel tests share: a name of this test's own.
            let role = "engage_sql_\(UUID().uuidString.prefix(8).lowercased())"
            try await f.db.execute("""
                CREATE ROLE \(unescaped: role) LOGIN;
                GRANT USAGE ON SCHEMA app TO \(unescaped: role);
                GRANT SELECT ON app.users TO \(unescaped: role);
                """)
            do {
                try await f.define(Self.highLTV) // reads app.ltv, which the role may not
                try await f.define(#"{"name": "Everyone", "type": "audience", "sql": "SELECT id AS user_id FROM app.users"}"#)
                let run = try await f.cli(["run", "--all"], environment: ["ENGAGE_SYNC_NOW": Self.t0, "ENGAGE_SQL_ROLE": role])
                #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
                let refused = try await lastRun(f, "high_ltv")
                #expect(refused.status == "failed")
                #expect(refused.error?.contains("permission denied for table ltv (the query runs as the role \(role), from ENGAGE_SQL_ROLE)") == true,
                        "\(refused.error ?? "-")")
                #expect(try await lastRun(f, "everyone").status == "succeeded")
                #expect(try await f.sandboxUsers()["u6"]?.data["everyone"] == .bool(true))
            } catch {
                Issue.record(error)
            }
            try await f.db.execute("DROP OWNED BY \(unescaped: role); DROP ROLE \(unescaped: role)")
        }
    }

    @Test("the recipe: queries log in as ENGAGE_SQL_ROLE; set_config('role'), RESET ROLE and SET SESSION AUTHORIZATION reach nothing more")
    func recipe() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            // A table the SQL login may not read, and a function anyone may call that resets the role.
            try await f.db.execute("""
                CREATE TABLE app.payment_tokens (user_id text, card text);
                INSERT INTO app.payment_tokens VALUES ('u1', '4111-secret-card');
                CREATE FUNCTION app.reset_role() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RESET ROLE; RETURN current_user; END $$;
                """)
            let engine = try #require(try await f.db.query("SELECT current_user::text AS u").first?.decode(String.self, "u"))
            let role = "engage_sql_\(UUID().uuidString.prefix(8).lowercased())"
            let noLogin = role + "_nologin"
            try await f.db.execute("""
                CREATE ROLE \(unescaped: role) LOGIN;
                CREATE ROLE \(unescaped: noLogin) NOLOGIN;
                GRANT USAGE ON SCHEMA app TO \(unescaped: role);
                GRANT SELECT ON app.users, app.ltv TO \(unescaped: role);
                """)
            do {
                let steal = "query_to_xml('select card from app.payment_tokens', true, false, '')::text"
                let escapes: [(key: String, sql: String)] = [
                    ("role_none", "SELECT u.id AS user_id, \(steal) AS value FROM (SELECT set_config('role', 'none', true)) r, app.users u"),
                    ("role_engine", "SELECT u.id AS user_id, \(steal) AS value FROM (SELECT set_config('role', '\(engine)', true)) r, app.users u"),
                    ("reset_role", "SELECT u.id AS user_id, app.reset_role() || \(steal) AS value FROM app.users u"),
                    ("session_auth", "SELECT u.id AS user_id, \(steal) AS value FROM (SELECT set_config('session_authorization', '\(engine)', true)) r, app.users u"),
                ]
                var documents = escapes.map { key, sql in
                    JSONValue.object(["name": .string(key), "key": .string(key), "type": "trait", "sql": .string(sql)])
                }
                documents.append(try JSONValue.parse(Self.highLTV))
                let file = try temporaryFile(JSONValue.array(documents).jsonString, suffix: ".json")
                let environment = ["ENGAGE_SYNC_NOW": Self.t0, "ENGAGE_SQL_ROLE": role]

                // define checks the queries as the login; it does not warn, as it would for a superuser.
                let define = try await f.cli(["define", file], environment: environment)
                #expect(define.status == 0, "\(define.stderr)")
                #expect(!define.stderr.contains("superuser"), "\(define.stderr)")
                let warned = try await f.cli(["status"])
                #expect(warned.stderr.contains("SQL definitions run as \(engine), a superuser"), "\(warned.stderr)")
                #expect(!(try await f.cli(["status"], environment: environment)).stderr.contains("superuser"))

                let run = try await f.cli(["run", "--all"], environment: environment)
                #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
                for (key, _) in escapes {
                    let last = try await lastRun(f, key)
                    #expect(last.status == "failed", "\(key)")
                    #expect(last.error?.contains("permission denied") == true, "\(key): \(last.error ?? "-")")
                }
                #expect(try await lastRun(f, "high_ltv").status == "succeeded")
                #expect(Set(try await f.sandboxUsers().filter { $0.value.data["high_ltv"] == .bool(true) }.keys) == ["u1", "u3", "u4"])
                // The card is nowhere: not at Vero, not in a table of the engine's.
                let users = try await f.sandboxUsers()
                #expect(!users.values.contains { $0.data.values.contains { $0.jsonString.contains("4111") } })
                #expect(try await f.count("""
                    SELECT (SELECT count(*) FROM engage.memberships WHERE value::text LIKE '%4111%')
                         + (SELECT count(*) FROM engage.outbox WHERE value::text LIKE '%4111%')
                         + (SELECT count(*) FROM engage.sync_runs WHERE error LIKE '%4111%') AS c
                    """) == 0)

                // preview works under the recipe: the login runs the query, the engine matches the rows
                // (u4 has had a profile since the run).
                let preview = try await f.cli(["preview", "high_ltv"], environment: environment)
                #expect(preview.status == 0, "\(preview.stderr)")
                #expect(preview.stdout.contains("the query returned 3 rows") && preview.stdout.contains("user_id: 3 known, 0 unknown"),
                        "\(preview.stdout)")

                // A role that cannot log in fails the SQL pairs with what to do, and nothing else.
                let refused = try await f.cli(["run", "--key", "high_ltv"], environment: ["ENGAGE_SYNC_NOW": "2026-06-01T13:00:00Z",
                                                                                     "ENGAGE_SQL_ROLE": noLogin])
                #expect(refused.status == 1)
                #expect(try await lastRun(f, "high_ltv").error?.contains("it must be a role WITH LOGIN") == true)
            } catch {
                Issue.record(error)
            }
            try await f.db.execute("""
                DROP OWNED BY \(unescaped: role); DROP ROLE \(unescaped: role); DROP ROLE \(unescaped: noLogin)
                """)
        }
    }

    @Test("the query's own connection terminated mid-run fails its pair only; the others sync and deliver")
    func readerTerminated() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.define(Self.highLTV)
            try await f.define(#"{"name": "Sleepy", "type": "audience", "sql": "SELECT u.id AS user_id FROM app.users u, (SELECT pg_sleep(30)) s"}"#)
            let (process, out, err) = try CLI.start(["run", "--all", "--database-url", f.url],
                                                    environment: ["ENGAGE_SYNC_NOW": Self.t0, SyncFixture.tokenVariable: SyncFixture.token])
            defer { if process.isRunning { process.terminate() } }
            // The reader's COPY of the sleeping query, not the run's own connection (COPY … FROM STDIN).
            try await f.waitFor("""
                SELECT count(pg_terminate_backend(pid))::int AS c FROM pg_stat_activity
                WHERE datname = current_database() AND query LIKE 'COPY (%pg_sleep(30)%' AND pid <> pg_backend_pid()
                """, atLeast: 1, seconds: 120)
            let run = await CLI.collect(process, out, err)
            #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
            let sleepy = try await lastRun(f, "sleepy")
            // PostgreSQL says why (57P01) when it can; a connection cut without a word is "lost".
            let said = sleepy.error.map { $0.contains("terminating connection") || $0.contains("the query's connection was lost") }
            #expect(sleepy.status == "failed" && said == true, "\(sleepy)")
            #expect(try await lastRun(f, "high_ltv").status == "succeeded")
            #expect(Set(try await f.sandboxUsers().filter { $0.value.data["high_ltv"] == .bool(true) }.keys) == ["u1", "u3", "u4"])
        }
    }

    @Test("a query slower than its timeout fails its pair only; the others succeed and the exit status is non-zero")
    func timeout() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.define(Self.highLTV)
            try await f.define(#"{"name": "Slow", "type": "audience", "timeout": "1s", "sql": "SELECT id AS user_id FROM app.users WHERE pg_sleep(0.5) IS NOT NULL"}"#)
            let output = try await run(f, at: Self.t0, expect: 1)
            #expect(try await lastRun(f, "slow").status == "failed")
            #expect(try await lastRun(f, "slow").error?.contains("longer than its timeout (1 s)") == true, "\(output.stdout)")
            #expect(try await lastRun(f, "high_ltv").status == "succeeded")
            #expect(Set(try await f.sandboxUsers().filter { $0.value.data["high_ltv"] == .bool(true) }.keys) == ["u1", "u3", "u4"])
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.memberships m JOIN engage.computations c ON c.id = m.computation_id WHERE c.key = 'slow'") == 0)
        }
    }

    @Test("NULL and duplicate identifiers fail the run clearly; a missing identifier, an unknown column, a syntax error fail define")
    func badQueries() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.define(#"{"name": "Nulls", "type": "audience", "sql": "SELECT NULLIF(id, 'u2') AS user_id FROM app.users"}"#)
            try await f.define(#"{"name": "Twice", "type": "trait", "sql": "SELECT 'u1' AS user_id, email AS value FROM app.users"}"#)
            try await run(f, at: Self.t0, expect: 1)
            #expect(try await lastRun(f, "nulls").error?.contains("1 row returned a NULL user_id") == true)
            #expect(try await lastRun(f, "twice").error?.contains("returned the user_id \"u1\" 6 times") == true)
            // Empty and oversized identifiers fail their pair by name: never a profile '', never silence.
            try await f.define(#"{"name": "Empty", "type": "audience", "sql": "SELECT CASE WHEN id = 'u2' THEN '' ELSE id END AS user_id FROM app.users"}"#)
            try await f.define(#"{"name": "Long", "type": "audience", "sql": "SELECT CASE WHEN id = 'u2' THEN repeat('x', 9600) ELSE id END AS user_id FROM app.users"}"#)
            try await f.define(#"{"name": "Long Email", "type": "audience", "sql": "SELECT id AS user_id, CASE WHEN id = 'u3' THEN repeat('e', 2000) ELSE email END AS email FROM app.users"}"#)
            try await run(f, at: "2026-06-01T12:05:00Z", expect: 1, ["--key", "empty", "--key", "long", "--key", "long_email"])
            let empty = try await lastRun(f, "empty").error ?? "-", long = try await lastRun(f, "long").error ?? "-"
            let longEmail = try await lastRun(f, "long_email").error ?? "-"
            #expect(empty.contains("1 row returned an empty user_id"), "\(empty)")
            #expect(long.contains("(9600 bytes) is over the 1024-byte limit of an identifier"), "\(long)")
            #expect(longEmail.contains("the row with the user_id \"u3\" has an email of 2000 bytes"), "\(longEmail)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.outbox") == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles") == 3)

            let stored = try await f.count("SELECT count(*)::int AS c FROM engage.computations")
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("def-\(UUID()).json").path
            try #"""
                [{"name": "No Id", "type": "audience", "sql": "SELECT email AS address FROM app.users"},
                 {"name": "Extra", "type": "trait", "sql": "SELECT id AS user_id, email AS value, 1 AS score FROM app.users"},
                 {"name": "Typo", "type": "audience", "sql": "SELECT id AS user_id\nFORM app.users"},
                 {"name": "Missing", "type": "audience", "sql": "SELECT id AS user_id FROM app.nowhere"},
                 {"name": "Fine", "type": "audience", "sql": "SELECT id AS user_id FROM app.users"},
                 {"name": "Bad Field", "type": "audience", "condition": {"event": "E"}, "colour": "red"},
                 {"name": "Two", "type": "audience", "sql": "SELECT id AS user_id FROM app.users; DELETE FROM app.users"}]
                """#.write(toFile: path, atomically: true, encoding: .utf8)
            let define = try await f.cli(["define", path])
            #expect(define.status == 2)
            #expect(define.stderr.contains("\(path):[0].sql: has no identifier column"), "\(define.stderr)")
            #expect(define.stderr.contains("\(path):[1].sql: returns the column \"score\", which would be ignored"), "\(define.stderr)")
            #expect(define.stderr.contains("\(path):[2].sql: syntax error at or near \"FORM\" (at line 2, column 1 of the query)"), "\(define.stderr)")
            #expect(define.stderr.contains("\(path):[3].sql: relation \"app.nowhere\" does not exist"), "\(define.stderr)")
            #expect(!define.stderr.contains("\(path):[4]"), "\(define.stderr)")
            #expect(define.stderr.contains("\(path):[5].colour: unknown field"), "\(define.stderr)")
            #expect(define.stderr.contains("\(path):[6].sql: syntax error at or near \";\" (at line 1, column 36 of the query)"), "\(define.stderr)")
            #expect(try await f.count("SELECT count(*)::int AS c FROM app.users") == 6)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.computations") == stored)
        }
    }

    @Test("identity by email (unknown emails become email-only profiles) and by profile_id (unknown ones ignored)")
    func identity() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.db.execute("""
                UPDATE engage.profiles SET email = 'shared@example.com' WHERE profile_id IN ('p2', 'p3');
                INSERT INTO engage.profiles (profile_id, email) VALUES ('anon-1', 'shared@example.com');
                CREATE TABLE app.newsletter (address text);
                INSERT INTO app.newsletter VALUES ('shared@example.com'), ('new@example.com');
                """)
            try await f.define(#"{"name": "Newsletter", "type": "audience", "sql": "SELECT address AS email FROM app.newsletter"}"#)
            try await f.define(#"{"name": "Picked", "type": "trait", "sql": "SELECT * FROM (VALUES ('p1', 1), ('p999', 2)) v(profile_id, value)"}"#)
            try await run(f, at: Self.t0, expect: 3, ["--strict"]) // the email-only member is skipped (missing_user_id)
            #expect(try await lastRun(f, "newsletter").created == 1)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles WHERE profile_id = 'email:new@example.com' AND email = 'new@example.com' AND user_id IS NULL") == 1)
            // Of the three profiles with the shared email, the first with a user id is the member.
            let newsletter: PostgresQuery = "SELECT string_agg(profile_id, ',' ORDER BY profile_id) AS h FROM engage.audience_members WHERE key = 'newsletter'"
            #expect(try await f.db.query(newsletter).first?.decode(String?.self, "h") == "email:new@example.com,p2")
            #expect(try await f.sandboxUsers()["u2"]?.data["newsletter"] == .bool(true))
            #expect(try await lastRun(f, "picked").created == 0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.profiles WHERE profile_id = 'p999'") == 0)
            #expect(try await f.sandboxUsers()["u1"]?.data["picked"] == .int(1))
        }
    }

    @Test("the guardrail blocks a SQL audience whose query suddenly returns no rows")
    func guardrail() async throws {
        try await SyncFixture.with { f in
            try await f.db.execute("""
                CREATE SCHEMA app;
                CREATE TABLE app.vips AS SELECT 'v' || i AS id FROM generate_series(1, 150) i;
                """)
            try await f.define(#"{"name": "VIPs", "key": "vips", "type": "audience", "sql": "SELECT id AS user_id FROM app.vips"}"#)
            try await run(f, at: Self.t0)
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger WHERE value = 'true'") == 150)
            try await f.db.execute("DELETE FROM app.vips")
            let blocked = try await run(f, at: "2026-06-01T14:00:00Z", expect: 3)
            #expect(blocked.stdout.contains("BLOCKED"), "\(blocked.stdout)")
            #expect(try await lastRun(f, "vips").status == "blocked")
            #expect(try await f.count("SELECT count(*)::int AS c FROM engage.ledger WHERE value = 'true'") == 150)
            #expect(try await f.sandboxUsers().values.filter { $0.data["vips"] == .bool(true) }.count == 150)
        }
    }

    @Test("a condition audience referring to a SQL audience reads its snapshot, evaluated first in the same run")
    func references() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.db.execute("""
                INSERT INTO engage.events (message_id, profile_id, event, occurred_at)
                VALUES ('o1', 'p1', 'Order Completed', '2026-05-31T12:00:00Z'), ('o2', 'p2', 'Order Completed', '2026-05-31T12:00:00Z')
                """)
            try await f.define(Self.highLTV)
            // Its key sorts before high_ltv: only the dependency order evaluates high_ltv first.
            try await f.define(#"{"name": "Active High LTV", "type": "audience", "condition": {"all": [{"audience": "high_ltv"}, {"event": "Order Completed", "within": "7d"}]}}"#)
            try await run(f, at: Self.t0)
            let members: PostgresQuery = "SELECT string_agg(profile_id, ',' ORDER BY profile_id) AS h FROM engage.audience_members WHERE key = 'active_high_ltv'"
            #expect(try await f.db.query(members).first?.decode(String?.self, "h") == "p1")
            #expect(try await lastRun(f, "active_high_ltv").status == "succeeded")

            // p2 becomes high-LTV: both change in the next run.
            try await f.db.execute("UPDATE app.ltv SET ltv = 2000 WHERE user_id = 'u2'")
            try await run(f, at: "2026-06-01T14:00:00Z")
            #expect(try await f.db.query(members).first?.decode(String?.self, "h") == "p1,p2")
            #expect(try await f.sandboxUsers()["u2"]?.data["active_high_ltv"] == .bool(true))
        }
    }

    @Test("preview of a SQL definition: rows, known and unknown identifiers, a sample; writes nothing")
    func preview() async throws {
        try await SyncFixture.with { f in
            try await seed(f)
            try await f.define(Self.highLTV)
            let tables = ["engage.profiles", "engage.memberships", "engage.sync_runs", "engage.outbox", "engage.computations",
                          "engage.profile_changes", "app.users", "app.ltv"]
            var before: [String] = []
            for table in tables { before.append(try await fingerprint(f, table)) }
            let preview = try await f.cli(["preview", "high_ltv"])
            #expect(preview.status == 0, "\(preview.stderr)")
            #expect(preview.stdout.contains("the query returned 3 rows"), "\(preview.stdout)")
            #expect(preview.stdout.contains("user_id: 2 known, 1 unknown"), "\(preview.stdout)")
            #expect(preview.stdout.contains("u4@example.com"), "\(preview.stdout)")
            var after: [String] = []
            for table in tables { after.append(try await fingerprint(f, table)) }
            #expect(after == before)
        }
    }
}
