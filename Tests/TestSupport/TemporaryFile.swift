import Foundation

/// Writes `text` to a new file in the temporary directory (`suffix` its extension, e.g.
/// `.json`) and returns its path.
public func temporaryFile(_ text: String, suffix: String = ".json") throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("engage-test-\(UUID().uuidString)\(suffix)").path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
