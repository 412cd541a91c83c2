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
}
