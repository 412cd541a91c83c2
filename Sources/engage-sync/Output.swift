import Foundation

/// One line (or block) on stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Prints rows as left-aligned columns.
func printTable(_ rows: [[String]]) {
    guard let columns = rows.first?.count else { return }
    let widths = (0..<columns).map { c in min(60, rows.map { $0[c].count }.max() ?? 0) }
    for row in rows {
        let cells = row.enumerated().map { i, cell in
            i == columns - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}
