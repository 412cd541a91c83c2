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
}
