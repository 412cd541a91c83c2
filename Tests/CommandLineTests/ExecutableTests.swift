import Foundation
import Testing
import TestSupport

@Suite("The engage-sync executable")
struct ExecutableTests {
    @Test("links libpq dynamically (ldd shows libpq)")
    func linksLibpq() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ldd")
        process.arguments = [CLI.executable.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(output.contains("libpq.so"))
    }

    @Test("--help at the root and after each subcommand prints the usage and exits 0")
    func help() async throws {
        let root = try await CLI.run(["--help"])
        #expect(root.status == 0 && root.stderr.isEmpty, "\(root.stderr)")
        for command in ["migrate", "define", "run", "resync", "deliver", "ingest", "status", "sandbox"] {
            #expect(root.stdout.contains(command), "\(command) missing from --help")
            let sub = try await CLI.run([command, "--help"])
            #expect(sub.status == 0 && sub.stdout.contains("USAGE: engage-sync \(command)"), "\(command): \(sub.stdout)\(sub.stderr)")
        }
        let wrong = try await CLI.run(["run", "--no-such-flag"])
        #expect(wrong.status == 2 && wrong.stderr.contains("no-such-flag"))
    }

    @Test("--version prints the release and the commit the binary was built from")
    func version() async throws {
        let run = try await CLI.run(["--version"])
        #expect(run.status == 0)
        #expect(run.stdout.firstMatch(of: #/^\d+\.\d+\.\d+ \(([0-9a-f]{12}(-dirty)?|unknown)\)\n$/#) != nil, "\(run.stdout)")
    }

    @Test("every subcommand, option and environment variable --help lists appears in docs/")
    func helpIsDocumented() async throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs").standardized
        let text = try FileManager.default.contentsOfDirectory(atPath: docs.path).filter { $0.hasSuffix(".md") }
            .map { try String(contentsOf: docs.appendingPathComponent($0), encoding: .utf8) }.joined(separator: "\n")
        var commands: [[String]] = [[]], missing: [String] = []
        while let command = commands.popLast() {
            let help = try await CLI.run(command + ["--help"])
            #expect(help.status == 0, "\(command): \(help.stderr)")
            let options = help.stdout.matches(of: #/--[a-z][a-z-]+/#).map { String($0.output) }
            let variables = help.stdout.matches(of: #/\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b/#).map { String($0.output) }
            for word in Set(options + variables) where !text.contains(word) { missing.append("\(command): \(word)") }
            if !command.isEmpty, !text.contains("engage-sync \(command.joined(separator: " "))") {
                missing.append("engage-sync \(command.joined(separator: " "))")
            }
            // Subcommands: the indented names under SUBCOMMANDS.
            if let listed = help.stdout.split(separator: "SUBCOMMANDS:").dropFirst().first {
                for line in listed.split(separator: "\n") {
                    if let name = line.firstMatch(of: #/^  ([a-z][a-z-]*) /#)?.output.1 { commands.append(command + [String(name)]) }
                }
            }
        }
        #expect(missing.isEmpty, "not in docs/: \(missing.sorted())")
    }
}
