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
        // Appends a piece of a line, keeping at most `maxLineBytes` of it.
        func append(_ piece: UnsafeBufferPointer<UInt8>) {
            let room = maxLineBytes - current.count
            if piece.count > room { tooLong = true }
            if room > 0 { current.append(contentsOf: UnsafeBufferPointer(rebasing: piece.prefix(room))) }
        }
        while true {
            let chunk = handle.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
            // Lines are found with memchr on the chunk's bytes and copied whole, not byte by byte.
            var lines: [(bytes: [UInt8], tooLong: Bool)] = []
            chunk.withUnsafeBytes { raw in
                let bytes = raw.bindMemory(to: UInt8.self)
                guard let base = bytes.baseAddress else { return }
                var start = 0
                while start < bytes.count {
                    guard let hit = memchr(base + start, 10, bytes.count - start) else {
                        append(UnsafeBufferPointer(rebasing: bytes[start...]))
                        return
                    }
                    let end = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                    let piece = UnsafeBufferPointer(rebasing: bytes[start..<end])
                    if current.isEmpty, !tooLong, piece.count <= maxLineBytes {
                        lines.append((Array(piece), false)) // the usual case: the whole line is in this chunk
                    } else {
                        append(piece)
                        lines.append((current, tooLong))
                        current = []
                        tooLong = false
                    }
                    start = end + 1
                }
            }
            for line in lines {
                number += 1
                try await body(Line(number: number, bytes: line.bytes, tooLong: line.tooLong))
            }
        }
        if !current.isEmpty || tooLong {
            number += 1
            try await body(Line(number: number, bytes: current, tooLong: tooLong))
        }
    }
}
