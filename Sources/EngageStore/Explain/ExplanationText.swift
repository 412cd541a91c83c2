import EngageCore
import Foundation

/// An explanation (``Explainer``) as indented lines: the verdicts, then what is kept. What
/// `engage-sync explain` prints and the status page shows.
public struct ExplanationText: Sendable {
    let e: JSONValue
    public private(set) var lines: [String] = []

    public init(_ explanation: JSONValue) {
        e = explanation
        let profile = e["profile"]
        let who = [profile?["user_id"]?.stringValue.map { "user \($0)" }, profile?["email"]?.stringValue]
            .compactMap { $0 }.joined(separator: ", ")
        var head = "\(text(e["key"])) for \(text(e["profile_id"]))"
        if !who.isEmpty { head += " (\(who))" }
        if e["deleted"] == true { head += " (deleted: no profile row)" }
        let value = e["value"] ?? .null
        let verdict = e["type"] == "audience" ? (value == true ? "member" : "not a member") : (value == .null ? "no value" : value.jsonString)
        lines.append("\(head) at \(text(e["at"])): \(verdict)")
        if e["eligible"] == false {
            lines.append(e["deleted"] == true ? "  no profile row: not evaluated"
                         : "  not eligible: no user id or email (include_anonymous is off)")
        }
        if let node = e["explanation"] { describe(node, depth: 1) }
        kept()
    }

    private func text(_ v: JSONValue?) -> String { v?.stringValue ?? v?.jsonString ?? "-" }

    private func window(_ node: JSONValue) -> String {
        switch (node["from"]?.stringValue, node["to"]?.stringValue) {
        case (let from?, let to?): " in [\(from), \(to))"
        case (let from?, nil): " since \(from)"
        default: " at any time"
        }
    }

    private func filters(_ node: JSONValue) -> String {
        guard let items = node["where"]?.arrayValue, !items.isEmpty else { return "" }
        return " where " + items.map { filter in
            let op = filter.objectValue?.filter { $0.key != "property" }.map { "\($0.key) \($0.value.jsonString)" }.joined() ?? ""
            return "\(text(filter["property"])) \(op)"
        }.joined(separator: " and ")
    }

    private mutating func describe(_ node: JSONValue, depth: Int) {
        let pad = String(repeating: "  ", count: depth)
        let verdict = text(node["verdict"])
        switch node["kind"]?.stringValue {
        case "all", "any":
            lines.append("\(pad)\(text(node["kind"])): \(verdict)")
            for item in node["items"]?.arrayValue ?? [] { describe(item, depth: depth + 1) }
        case "not":
            lines.append("\(pad)not: \(verdict)")
            if let item = node["item"] { describe(item, depth: depth + 1) }
        case "audience":
            if node["source"] == "sql snapshot" {
                let held = node["verdict"] == true ? "held since \(text(node["since"]))" : "not held"
                lines.append("\(pad)audience \(text(node["audience"])) (SQL, its snapshot): \(held): \(verdict)")
            } else {
                let eligible = node["eligible"] == false ? " (not eligible: no user id or email)" : ""
                lines.append("\(pad)audience \(text(node["audience"]))\(eligible): \(verdict)")
                if let condition = node["condition"] { describe(condition, depth: depth + 1) }
            }
        case "trait":
            let op = node["operator"]?.objectValue?.map { "\($0.key) \($0.value.jsonString)" }.joined(separator: " ") ?? ""
            let found = node["found"].map { $0 == .null ? "missing" : "found \($0.jsonString)" } ?? "missing"
            lines.append("\(pad)trait \(text(node["trait"])) \(op): \(found): \(verdict)")
        case "event":
            let rule = node["rule"]?.objectValue?.first.map { "\($0.key.replacingOccurrences(of: "_", with: " ")) \($0.value.jsonString)" } ?? ""
            var line = "\(pad)event \(text(node["event"]).debugDescription)\(filters(node))\(window(node)): \(text(node["count"])) (\(rule)): \(verdict)"
            if let first = node["first"]?.stringValue, let last = node["last"]?.stringValue { line += "; first \(first), last \(last)" }
            lines.append(line)
        case "value":
            let of = node["property"]?.stringValue.map { " of \($0)" } ?? ""
            lines.append("\(pad)\(text(node["aggregate"]))\(of) over \(text(node["event"]).debugDescription)\(filters(node))\(window(node)): \(text(node["count"])) events")
            for event in node["events"]?.arrayValue ?? [] {
                let value = node["property"] == nil ? "" : " \(text(node["property"])) \(event["value"]?.jsonString ?? "missing")"
                lines.append("\(pad)  \(text(event["occurred_at"])) \(text(event["message_id"]))\(value)")
            }
            if case .int(let more)? = node["more"], more > 0 { lines.append("\(pad)  and \(more) more") }
        case "sql":
            lines.append("\(pad)a SQL definition: its query decides (not run again); the snapshot held \(text(node["value"])) at that instant")
        default:
            lines.append("\(pad)\(node.jsonString)")
        }
    }

    private mutating func kept() {
        if let snapshot = e["snapshot"], snapshot != .null {
            lines.append("snapshot: \(text(snapshot["value"])) since \(text(snapshot["since"])) (run \(text(snapshot["run"])))")
        } else {
            lines.append("snapshot: nothing held")
        }
        for h in e["history"]?.arrayValue ?? [] {
            lines.append("history: \(text(h["value"])) from \(h["since"] == .null ? "before the history was kept" : text(h["since"])) until \(text(h["until"]))")
        }
        for d in e["destinations"]?.arrayValue ?? [] {
            let ledger = d["ledger"]?.arrayValue ?? [], outbox = d["outbox"]?.arrayValue ?? []
            guard !ledger.isEmpty || !outbox.isEmpty else { continue }
            lines.append("\(text(d["destination"])):")
            for l in ledger {
                lines.append("  ledger: \(text(l["vero_id"])) holds \(text(l["value"])) (confirmed \(text(l["confirmed_at"])))")
            }
            for o in outbox {
                var line = "  outbox #\(text(o["id"])) (run \(text(o["run"]))): \(text(o["op"])) \(text(o["value"])) to \(text(o["vero_id"])): \(text(o["status"]))"
                if let reason = o["reason"]?.stringValue { line += " (\(reason))" }
                line += ", \(text(o["attempts"])) attempt\(o["attempts"] == 1 ? "" : "s")"
                if case .int(let code)? = o["last_status_code"] { line += ", last HTTP \(code)" }
                lines.append(line)
            }
        }
        for event in e["email_events"]?.arrayValue ?? [] {
            let campaign = event["campaign"]?.stringValue.map { " (\($0))" } ?? ""
            lines.append("email: \(text(event["event"])) at \(text(event["occurred_at"]))\(campaign)")
        }
    }
}
