import EngageCore
import EngageStore
import Foundation

/// Small helpers for pages written as text: escaping, masking, numbers, the page shell.
enum HTML {
    /// Text made safe inside an element or a quoted attribute.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    /// Every email address in `text` masked as `e***@example.com`: the page shows who, not a list
    /// of addresses.
    static func maskEmails(_ text: String) -> String {
        guard text.contains("@") else { return text }
        return text.replacing(#/([^\s@"'<>,;:()\[\]{}]+)@([^\s@"'<>,;:()\[\]{}]+)/#) { match in
            "\(match.1.prefix(1))***@\(match.2)"
        }
    }

    /// User data for display: emails masked, then escaped.
    static func user(_ text: String?) -> String {
        text.map { escape(maskEmails($0)) } ?? "<span class=muted>–</span>"
    }

    static func number(_ value: Int) -> String {
        var digits = String(value.magnitude), out = ""
        while digits.count > 3 {
            out = "," + digits.suffix(3) + out
            digits = String(digits.dropLast(3))
        }
        return (value < 0 ? "-" : "") + digits + out
    }

    static func milliseconds(_ value: Double?) -> String {
        guard let value else { return "–" }
        return value >= 1000 ? String(format: "%.2f s", value / 1000) : String(format: "%.0f ms", value)
    }

    static func seconds(_ value: Double?) -> String { milliseconds(value.map { $0 * 1000 }) }

    /// An ISO-8601 instant as `2026-11-30 06:10:17` (every page says its times are UTC), in a
    /// `<time>` element.
    static func time(_ date: Date?) -> String {
        guard let date else { return "<span class=muted>–</span>" }
        let iso = self.iso(date)
        let shown = iso.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
        return "<time datetime=\"\(escape(iso))\">\(escape(shown))</time>"
    }

    /// An instant as ISO-8601 UTC to the second (`2026-11-30T06:10:17Z`).
    static func iso(_ date: Date) -> String { Timestamp(date).iso8601Seconds }

    /// A run's status in a badge coloured by what it means; "never" for a pair that never ran.
    static func badge(_ status: RunStatus?) -> String {
        guard let status else { return "<span class=muted>never</span>" }
        let tone = switch status {
        case .succeeded: "ok"
        case .partial, .skipped, .running: "warn"
        case .failed, .blocked: "bad"
        }
        return "<span class=\"badge \(tone)\">\(status.rawValue)</span>"
    }

    /// An outbox row's status in a badge coloured by what it means.
    static func badge(_ status: OutboxStatus) -> String {
        let tone = switch status {
        case .delivered: "ok"
        case .pending, .skipped, .superseded: "warn"
        case .failed, .rejected: "bad"
        }
        return "<span class=\"badge \(tone)\">\(status.rawValue)</span>"
    }

    /// A path segment (a key or a destination name) for a link.
    static func path(_ segment: String) -> String {
        escape(segment.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? segment)
    }

    /// The shell every page shares: its title, the navigation, the style, the body.
    static func page(title: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title)) · engage-sync</title>
        <style>\(style)</style></head>
        <body><header><a href="/" class=brand>engage-sync</a> <span class=muted>status · times in UTC</span></header>
        <main>
        \(body)
        </main></body></html>
        """
    }

    static let style = """
        :root{--fg:#1d2430;--muted:#6b7380;--line:#e3e6ea;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--accent:#0b5fff}
        *{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:#f6f7f9}
        header{background:#fff;border-bottom:1px solid var(--line);padding:10px 24px}main{padding:16px 24px}
        .brand{font-weight:600;color:var(--fg);text-decoration:none}a{color:var(--accent)}h1{font-size:20px;margin:8px 0 12px}
        h2{font-size:16px;margin:24px 0 8px}.muted{color:var(--muted)}
        table{border-collapse:collapse;background:#fff;border:1px solid var(--line);width:100%;font-size:13px}
        th,td{padding:5px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
        th{font-weight:600;background:#fafbfc;white-space:nowrap}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}time,.nowrap{white-space:nowrap}
        tr.paused td{background:#fff4f4}.badge{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;border:1px solid}
        .ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}
        .totals{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
        .totals div{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:120px}
        .totals b{display:block;font-size:20px;font-variant-numeric:tabular-nums}
        .alert{background:#fff4f4;border:1px solid #f3c2c2;color:var(--bad);padding:8px 12px;border-radius:6px;margin:8px 0}
        pre{background:#fff;border:1px solid var(--line);padding:10px;overflow:auto;max-height:360px}
        svg{background:#fff;border:1px solid var(--line)}.legend span{margin-right:14px}
        form{background:#fff;border:1px solid var(--line);padding:16px;max-width:360px}input{padding:6px;width:100%;margin:6px 0 10px}
        """
}
