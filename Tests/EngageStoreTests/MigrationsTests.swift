import EngageStore
import Foundation
import PostgresClient
import Testing
import TestSupport

@Suite("Migrations")
struct MigrationsTests {
    @Test("the embedded migrations match sql/ (run Scripts/embed-sql.sh after editing sql/)")
    func embeddedMatchesFiles() throws {
        let sqlDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("sql")
        let files = try FileManager.default.contentsOfDirectory(atPath: sqlDir.path)
            .filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.map { String($0.dropLast(4)) } == Migrations.all.map(\.name))
        for (file, migration) in zip(files, Migrations.all) {
            let text = try String(contentsOf: sqlDir.appendingPathComponent(file), encoding: .utf8)
            #expect(text == migration.sql + "\n" || text == migration.sql, "\(file) differs from the embedded copy")
        }
        let views = sqlDir.appendingPathComponent("views")
        let readSide = try FileManager.default.contentsOfDirectory(atPath: views.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(readSide.map { String($0.dropLast(4)) } == Migrations.readSide.map(\.file))
        for (file, object) in zip(readSide, Migrations.readSide) {
            let text = try String(contentsOf: views.appendingPathComponent(file), encoding: .utf8)
            #expect(text == object.sql + "\n" || text == object.sql, "views/\(file) differs from the embedded copy")
        }
    }

    @Test("each view and function is defined in one file under sql/, its own in sql/views/, never in a numbered migration")
    func readSideHasOneHome() throws {
        let definition = #/CREATE\s+(?:OR\s+REPLACE\s+)?(VIEW|FUNCTION)\s+engage\.([a-z_]+)/#
        var homes: [String: [String]] = [:]
        for migration in Migrations.all {
            for match in migration.sql.matches(of: definition) { homes[String(match.output.2), default: []].append(migration.name) }
        }
        for object in Migrations.readSide {
            let defined = object.sql.matches(of: definition).map { String($0.output.2) }
            #expect(defined == [object.name], "views/\(object.file) defines \(defined)")
            homes[object.name, default: []].append("views/\(object.file)")
        }
        let twice = homes.filter { $0.value.count > 1 }
        #expect(twice.isEmpty, "defined in more than one file: \(twice)")
        // Only the triggers' functions and a cast helper, part of the tables they serve, stay numbered.
        let numbered = Set(homes.filter { $0.value.allSatisfy { !$0.hasPrefix("views/") } }.keys)
        #expect(numbered == ["try_timestamptz", "log_event_changes", "log_profile_changes", "log_profile_updates",
                             "count_outbox_rows", "count_ledger_rows", "clear_figures"], "\(numbered)")
    }

    @Test("a view whose definition changed is created again by the next migrate; an unchanged one is left alone")
    func readSideReapplied() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            let first = try await Migrations.migrate(db)
            #expect(first.readSide == Migrations.readSide.map(\.name))
            // As after an upgrade whose sync_status differs from the installed one.
            try await db.execute("""
                UPDATE engage.schema_read_side SET checksum = 'older' WHERE name = 'sync_status';
                DROP VIEW engage.sync_status;
                CREATE VIEW engage.sync_status AS SELECT 1 AS stale;
                """)
            let second = try await Migrations.migrate(db)
            #expect(second.applied.isEmpty && second.readSide == ["sync_status"])
            let columns = try await db.query("""
                SELECT count(*)::int AS c FROM information_schema.columns
                WHERE table_schema = 'engage' AND table_name = 'sync_status' AND column_name IN ('key', 'destination', 'pending')
                """).first?.decode(Int.self, "c")
            #expect(columns == 3)
            let third = try await Migrations.migrate(db)
            #expect(third.applied.isEmpty && third.readSide.isEmpty)
        }
    }

    @Test("migrate twice: the second call applies nothing and changes nothing")
    func idempotent() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            let first = try await Migrations.migrate(db)
            #expect(first.applied == Migrations.all.map(\.name))
            let spaceID = try await db.query("SELECT value FROM engage.settings WHERE key = 'space_id'").first?
                .decode(String.self, "value")
            let second = try await Migrations.migrate(db)
            #expect(second.applied.isEmpty && second.readSide.isEmpty)
            let again = try await db.query("SELECT value FROM engage.settings WHERE key = 'space_id'").first?
                .decode(String.self, "value")
            #expect(spaceID != nil && spaceID == again)
            let count = try await db.query("SELECT count(*)::int AS c FROM engage.schema_migrations").first?
                .decode(Int.self, "c")
            #expect(count == Migrations.all.count)
        }
    }

    /// An installation as it was before migration `version`: the numbered migrations below it.
    func applyMigrations(below version: Int, _ db: PostgresConnection) async throws {
        try await db.execute("""
            CREATE SCHEMA engage;
            CREATE TABLE engage.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                                   applied_at timestamptz NOT NULL DEFAULT now());
            """)
        for migration in Migrations.all where migration.version < version {
            try await db.execute(PostgresQuery(unsafeSQL: migration.sql))
            try await db.query("INSERT INTO engage.schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))")
        }
    }

    @Test("0007 re-keys a ledger written before it by the Vero id each value was confirmed for")
    func ledgerByVeroID() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await applyMigrations(below: 7, db)
            // Two profiles once sent with the same email id; p1 has since changed its user id.
            try await db.execute("""
                INSERT INTO engage.destinations (name) VALUES ('vero');
                INSERT INTO engage.computations (key, name, type, definition) VALUES ('k', 'K', 'audience', '{}');
                INSERT INTO engage.profiles (profile_id, user_id, email) VALUES ('p1', 'u1-new', 'a@x.io'), ('p2', NULL, 's@x.io'), ('p3', NULL, 's@x.io');
                INSERT INTO engage.outbox (destination_id, computation_id, profile_id, op, value, message, status) VALUES
                    (1, 1, 'p1', 'enter', 'true', '{"type": "identify", "userId": "u1", "traits": {"k": true, "email": "a@x.io"}}', 'delivered'),
                    (1, 1, 'p2', 'enter', 'true', '{"type": "identify", "userId": "s@x.io", "traits": {"k": true}}', 'delivered'),
                    (1, 1, 'p3', 'exit', 'false', '{"type": "track", "userId": "s@x.io", "context": {"traits": {"email": "s@x.io"}}}', 'delivered');
                INSERT INTO engage.ledger (destination_id, computation_id, profile_id, value, confirmed_at, outbox_id)
                SELECT destination_id, computation_id, profile_id, value, now(), id FROM engage.outbox;
                """)
            let report = try await Migrations.migrate(db)
            #expect(report.applied.first == "0007_vero_identity")
            let rows = try await db.query("SELECT vero_id, profile_id, email, value::text AS value FROM engage.ledger ORDER BY vero_id")
                .map { "\($0["vero_id"] ?? "")|\($0["profile_id"] ?? "")|\($0["email"] ?? "")|\($0["value"] ?? "")" }
            #expect(rows == ["s@x.io|p3|s@x.io|false", "u1|p1|a@x.io|true"])
        }
    }

    @Test("0016 turns the history of changes into superseded values with since and until, losing none; pairs re-read what they had not")
    func snapshotHistory() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await applyMigrations(below: 16, db)
            // p1 entered at 10:00, left at 11:00, entered again at 12:00; p2 held a trait before the
            // history began (changed at 11:00), then changed at 12:00. A pair read up to the 11:00 rows.
            try await db.execute("""
                INSERT INTO engage.destinations (name) VALUES ('vero');
                INSERT INTO engage.computations (key, name, type, definition) VALUES ('k', 'K', 'audience', '{}');
                INSERT INTO engage.memberships (computation_id, profile_id, value, since) VALUES
                    (1, 'p1', 'true', '2026-03-01T12:00:00Z'), (1, 'p2', '3', '2026-03-01T12:00:00Z');
                INSERT INTO engage.membership_history (computation_id, profile_id, value, previous_value, changed_at, run_id) VALUES
                    (1, 'p1', 'true', NULL, '2026-03-01T10:00:00Z', 1),
                    (1, 'p1', NULL, 'true', '2026-03-01T11:00:00Z', 2),
                    (1, 'p2', '2', '1', '2026-03-01T11:00:00Z', 2),
                    (1, 'p1', 'true', NULL, '2026-03-01T12:00:00Z', 3),
                    (1, 'p2', '3', '2', '2026-03-01T12:00:00Z', 3);
                INSERT INTO engage.pair_watermarks (destination_id, computation_id, history_id, seen) VALUES (1, 1, 3, pg_current_snapshot());
                """)
            let report = try await Migrations.migrate(db)
            #expect(report.applied.first == "0016_snapshot_history")
            let history = try await db.query("""
                SELECT profile_id, value::text AS value, to_char(since AT TIME ZONE 'UTC', 'HH24:MI') AS since,
                       to_char(until AT TIME ZONE 'UTC', 'HH24:MI') AS until, since_run, until_run
                FROM engage.membership_history ORDER BY profile_id, until
                """).map { "\($0["profile_id"] ?? "")=\($0["value"] ?? "") \($0["since"] ?? "?")-\($0["until"] ?? "") runs \($0["since_run"] ?? "?")-\($0["until_run"] ?? "")" }
            #expect(history == ["p1=true 10:00-11:00 runs 1-2", "p2=1 ?-11:00 runs ?-2", "p2=2 11:00-12:00 runs 2-3"])
            #expect(try await db.query("SELECT profile_id, since_run FROM engage.memberships ORDER BY profile_id")
                .map { "\($0["profile_id"] ?? "")@\($0["since_run"] ?? "")" } == ["p1@3", "p2@3"])
            // Who held what at 10:30 (p2 since before the history) and at 11:30.
            let at1030 = try await db.query("SELECT profile_id, value::text AS value FROM engage.members_at('k', '2026-03-01T10:30:00Z') ORDER BY 1")
                .map { "\($0["profile_id"] ?? "")=\($0["value"] ?? "")" }
            #expect(at1030 == ["p1=true", "p2=1"])
            let at1130 = try await db.query("SELECT profile_id, value::text AS value FROM engage.members_at('k', '2026-03-01T11:30:00Z') ORDER BY 1")
                .map { "\($0["profile_id"] ?? "")=\($0["value"] ?? "")" }
            #expect(at1130 == ["p2=2"])
            // The pair had not read the 12:00 changes: they wait for it as changed profiles.
            #expect(try await db.query("SELECT change_id FROM engage.pair_watermarks").first?.decode(Int.self, "change_id") == 0)
            #expect(try await db.query("SELECT profile_ids FROM engage.snapshot_changes").map { try $0.decode([String].self, "profile_ids").sorted() }
                    == [["p1", "p2"]])
        }
    }

    @Test("engage-sync migrate: twice in a row, and two processes at once")
    func migrateCommand() async throws {
        try await TestDatabase.with(migrated: false) { db, url in
            async let a = CLI.run(["migrate", "--database-url", url])
            async let b = CLI.run(["migrate", "--database-url", url])
            let (ra, rb) = try await (a, b)
            #expect(ra.status == 0, "\(ra.stderr)")
            #expect(rb.status == 0, "\(rb.stderr)")
            // Exactly one of them applied the migrations.
            #expect([ra.stdout, rb.stdout].filter { $0.contains("applied 0001_init") }.count == 1)
            let third = try await CLI.run(["migrate"], environment: ["DATABASE_URL": url])
            #expect(third.status == 0)
            #expect(third.stdout.contains("up to date"))
            let count = try await db.query("SELECT count(*)::int AS c FROM engage.schema_migrations").first?
                .decode(Int.self, "c")
            #expect(count == Migrations.all.count)
        }
    }

    @Test("a connection failure exits 1 with one clear line and no password")
    func migrateConnectionError() async throws {
        let run = try await CLI.run(["migrate", "--database-url", "postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=2"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("127.0.0.1:1/x"))
        #expect(!run.stderr.contains("hunter2"))
    }

    @Test("usage errors exit 2; --version prints the version")
    func usage() async throws {
        let bad = try await CLI.run(["migrate", "--no-such-flag"])
        #expect(bad.status == 2)
        let version = try await CLI.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.contains("0.1.0"))
    }
}
