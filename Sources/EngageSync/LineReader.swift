import Foundation

/// Reads a file (or standard input) line by line in chunks, never holding the whole file.
/// Lines longer than `maxLineBytes` are returned truncated with `tooLong` set, so one huge
/// line cannot exhaust memory.
public struct LineReader: Sendable {
    public struct Line: Sendable {
        public var number: Int
        public var bytes: [UInt8]
        public var tooLong: Bool
    }

    public let path: String?
    public let maxLineBytes: Int

    /// `path` nil or "-" reads standard input.
    public init(path: String?, maxLineBytes: Int = 1 << 20) {
        self.path = path == "-" ? nil : path
        self.maxLineBytes = maxLineBytes
    }

    public struct OpenError: Error, CustomStringConvertible, Sendable {
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// Calls `body` for each line (without its newline); stops early when `body` throws.
    public func forEachLine(_ body: (Line) async throws -> Void) async throws {
        let handle: FileHandle
        if let path {
            guard let opened = FileHandle(forReadingAtPath: path) else {
                throw OpenError(path: path, reason: "cannot open the file")
            }
            handle = opened
        } else {
            handle = FileHandle.standardInput
        }
        defer { if path != nil { try? handle.close() } }
        var current: [UInt8] = []
        var tooLong = false
        var number = 0
        while true {
            let chunk = handle.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
            for byte in chunk {
                if byte == 10 {
                    number += 1
                    try await body(Line(number: number, bytes: current, tooLong: tooLong))
                    current.removeAll(keepingCapacity: true)
                    tooLong = false
                } else if current.count < maxLineBytes {
                    current.append(byte)
                } else {
                    tooLong = true
                }
            }
        }
        if !current.isEmpty || tooLong {
            number += 1
            try await body(Line(number: number, bytes: current, tooLong: tooLong))
        }
    }
}
