import Foundation
import PostgresClient
import Testing
import TestSupport

@testable import EngageStore

@Suite("Scratch tables")
struct ScratchTableTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// Every Swift file under Sources/ but the embedded migrations, by path.
    static func sourceFiles() throws -> [(path: String, text: String)] {
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)?
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" && $0.lastPathComponent != "EmbeddedMigrations.swift" } ?? []
        return try files.map { ($0.path, try String(contentsOf: $0, encoding: .utf8)) }
    }

    @Test("no statement outside ScratchTable names a temporary table of the pipeline, or creates one")
    func declaredOnce() throws {
        let declared = [ScratchTable.sqlRows, .sqlResult, .affected, .result, .snapshotChanges, .candidates, .current,
                        .unsettled, .desired, .enqueue].map(\.name)
        #expect(Set(declared).count == declared.count, "each name is declared once")
        let files = try Self.sourceFiles()
        #expect(files.count > 20, "the sources were found at \(Self.sources.path)")
        for (path, text) in files where !path.hasSuffix("Support/ScratchTable.swift") {
            for name in declared {
                #expect(text.range(of: "\\b\(name)\\b", options: .regularExpression) == nil, "\(path) spells \(name)")
            }
            // Ingest's staging table lives for the session (reused by every batch), not a run's
            // transaction: it is ingest's own, declared where it is used.
            if !path.hasSuffix("Ingest/IngestStore.swift") {
                #expect(text.range(of: "\\bCREATE\\s+(TEMP|TEMPORARY)\\s+TABLE", options: [.regularExpression, .caseInsensitive]) == nil,
                        "\(path) creates a temporary table outside ScratchTable")
            }
        }
    }

    @Test("a query of another shape than the declaration fails, naming the table; takeOver adds the columns with defaults")
    func shapes() async throws {
        try await TestDatabase.with(migrated: false) { db, _ in
            try await db.withTransaction { tx in
                let db = tx.connection
                try await ScratchTable.result.create(as: "SELECT 'p1', to_jsonb(1), 'u1', NULL", db)
                let error = await #expect(throws: PostgresError.self) {
                    try await ScratchTable.desired.create(as: "SELECT 'p1', 'u1'", db)
                }
                #expect(error?.description.contains(ScratchTable.desired.name) == true, "\(String(describing: error))")
                tx.rollback()
            }
            try await db.withTransaction { tx in
                let db = tx.connection
                try await ScratchTable.result.create(as: "SELECT 'p1', to_jsonb(1), 'u1', NULL", db)
                try await ScratchTable.current.takeOver(.result, db)
                let row = try await db.query("SELECT profile_id, value::text AS value, deferred FROM \(ScratchTable.current)").first
                #expect(try row?.decode(String.self, "profile_id") == "p1")
                #expect(try row?.decode(String.self, "value") == "1")
                #expect(try row?.decode(Bool.self, "deferred") == false)
                #expect(try await db.query("SELECT to_regclass(\("pg_temp." + ScratchTable.result.name)) IS NULL AS gone").first?
                    .decode(Bool.self, "gone") == true)
            }
        }
    }
}
