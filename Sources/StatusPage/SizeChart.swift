import EngageStore
import Foundation

/// A definition's size over time as inline SVG: members after each run (a line with a point per
/// run, in run order), and below it the entries (up) and exits (down) of each run. Hovering a
/// point shows its run (an SVG `<title>`, no script). Each point carries `data-run` and
/// `data-members`.
enum SizeChart {
    static let width = 960.0, left = 64.0, right = 16.0
    static let top = 16.0, membersHeight = 150.0, barsMiddle = 212.0, barsHalf = 26.0, height = 262.0

    static func svg(_ runs: [DefinitionRun]) -> String {
        guard !runs.isEmpty else { return "<p class=muted id=chart>No runs yet.</p>\n" }
        let plot = width - left - right
        let step = runs.count > 1 ? plot / Double(runs.count - 1) : 0
        let maxMembers = max(runs.map(\.members).max() ?? 0, 1)
        let maxMoves = max(runs.map { max($0.entered, $0.exited) }.max() ?? 0, 1)
        let bar = max(1, min(12, step * 0.6))
        func x(_ i: Int) -> Double { runs.count > 1 ? left + Double(i) * step : left + plot / 2 }
        func y(_ members: Int) -> Double { top + membersHeight * (1 - Double(members) / Double(maxMembers)) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        var svg = "<svg id=chart role=img viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"100%\" "
            + "aria-label=\"Members after each of \(runs.count) runs\" data-max-members=\"\(maxMembers)\">\n"
        // Axes: members from 0 to the largest size, the moves' baseline, the first and last run's date.
        svg += "<g font-size=11 fill=\"#6b7380\">"
            + "<text x=\(f(left - 6)) y=\(f(top + 4)) text-anchor=end>\(HTML.number(maxMembers))</text>"
            + "<text x=\(f(left - 6)) y=\(f(top + membersHeight + 4)) text-anchor=end>0</text>"
            + "<text x=\(f(left - 6)) y=\(f(barsMiddle - barsHalf + 8)) text-anchor=end>+\(HTML.number(maxMoves))</text>"
            + "<text x=\(f(left - 6)) y=\(f(barsMiddle + barsHalf)) text-anchor=end>−\(HTML.number(maxMoves))</text>"
            + "<text x=\(f(left)) y=\(f(height - 2))>\(HTML.iso(runs[0].startedAt))</text>"
            + "<text x=\(f(width - right)) y=\(f(height - 2)) text-anchor=end>\(HTML.iso(runs[runs.count - 1].startedAt))</text></g>\n"
        svg += "<line x1=\(f(left)) y1=\(f(top + membersHeight)) x2=\(f(width - right)) y2=\(f(top + membersHeight)) stroke=\"#e3e6ea\"/>"
            + "<line x1=\(f(left)) y1=\(f(barsMiddle)) x2=\(f(width - right)) y2=\(f(barsMiddle)) stroke=\"#e3e6ea\"/>\n"
        // Entries up in green, exits down in red.
        svg += "<g class=moves>"
        for (i, run) in runs.enumerated() where run.entered > 0 || run.exited > 0 {
            let up = barsHalf * Double(run.entered) / Double(maxMoves), down = barsHalf * Double(run.exited) / Double(maxMoves)
            if run.entered > 0 {
                svg += "<rect data-run=\"\(run.id)\" data-entered=\"\(run.entered)\" x=\(f(x(i) - bar / 2)) y=\(f(barsMiddle - up)) "
                    + "width=\(f(bar)) height=\(f(up)) fill=\"#1a7f37\"/>"
            }
            if run.exited > 0 {
                svg += "<rect data-run=\"\(run.id)\" data-exited=\"\(run.exited)\" x=\(f(x(i) - bar / 2)) y=\(f(barsMiddle)) "
                    + "width=\(f(bar)) height=\(f(down)) fill=\"#cf222e\"/>"
            }
        }
        svg += "</g>\n"
        // Members: the line, then a point per run.
        let line = runs.enumerated().map { "\(f(x($0.offset))),\(f(y($0.element.members)))" }.joined(separator: " ")
        svg += "<polyline fill=none stroke=\"#0b5fff\" stroke-width=1.5 points=\"\(line)\"/>\n<g class=points fill=\"#0b5fff\">"
        for (i, run) in runs.enumerated() {
            svg += "<circle data-run=\"\(run.id)\" data-members=\"\(run.members)\" cx=\(f(x(i))) cy=\(f(y(run.members))) r=2.5>"
                + "<title>run \(run.id) · \(HTML.iso(run.startedAt)) · \(run.mode.rawValue) to \(HTML.escape(run.destination)): "
                + "\(HTML.number(run.members)) members, +\(HTML.number(run.entered)) −\(HTML.number(run.exited))</title></circle>"
        }
        svg += "</g></svg>\n<p class=\"legend muted\"><span style=\"color:#0b5fff\">● members after the run</span>"
            + "<span class=ok>▮ entered</span><span class=bad>▮ exited</span></p>\n"
        return svg
    }
}
