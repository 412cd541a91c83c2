import EngageCore
import EngageStore
import Foundation

/// The profile pages: find a profile, see what it holds and its timeline, and why it holds each
/// value (``ExplanationText``). Emails are masked, as on every page.
extension StatusPages {
    /// `GET /profiles?q=`: a search by user id, email or profile id, and what it found.
    public static func profileSearch(_ q: String, _ matches: [ProfileMatch]) -> String {
        // The query is not echoed into the box: it may be an email, which pages show masked only.
        var body = "<p><a href=\"/\">← all syncs</a></p><h1>Profiles</h1>\n" + searchForm
        if !q.isEmpty {
            body += "<p>Profiles whose user id, email or profile id is <code>\(HTML.user(q))</code>:</p>\n"
            if matches.isEmpty {
                body += "<p class=muted id=nomatch>No profile has that user id, email or profile id.</p>\n"
            } else {
                body += "<table id=matches><thead><tr><th>Profile</th><th>User id</th><th>Email</th></tr></thead><tbody>\n"
                for m in matches {
                    body += "<tr data-profile=\"\(HTML.escape(m.profileID))\"><td><a href=\"/profiles/\(HTML.path(m.profileID))\">"
                        + "\(HTML.user(m.profileID))</a></td><td>\(HTML.user(m.userID))</td><td>\(HTML.user(m.email))</td></tr>\n"
                }
                body += "</tbody></table>\n"
            }
        }
        return HTML.page(title: "Profiles", body: body)
    }

    static let searchForm = "<form method=get action=\"/profiles\" id=search><input name=q "
        + "placeholder=\"user id, email or profile id\"> <button>Find a profile</button></form>\n"

    /// `GET /profiles/ID`: the audiences and traits the profile holds, since when, each linked to
    /// its explanation, and its timeline (values taking effect and ending, changes sent, email events).
    public static func profile(_ p: ProfileDetail) -> String {
        var body = "<p><a href=\"/profiles\">← profiles</a></p><h1>\(HTML.user(p.profileID)) <span class=muted>"
            + [p.userID.map { "user \(HTML.user($0))" }, p.email.map { HTML.user($0) }, p.deleted ? "deleted" : nil]
                .compactMap { $0 }.joined(separator: " · ") + "</span></h1>\n"
        body += "<h2>Holds now</h2>\n"
        if p.holdings.isEmpty {
            body += "<p class=muted id=holdings>No audience or trait.</p>\n"
        } else {
            body += "<table id=holdings><thead><tr><th>Definition</th><th>Value</th><th>Since</th><th></th></tr></thead><tbody>\n"
            for h in p.holdings {
                body += "<tr data-key=\"\(HTML.escape(h.key))\" data-type=\"\(h.type.rawValue)\"><td><a href=\"/definitions/\(HTML.path(h.key))\">"
                    + "\(HTML.escape(h.key))</a>\(h.type == .trait ? " <span class=muted>trait</span>" : "")</td>"
                    + "<td><code>\(HTML.user(h.value))</code></td><td>\(HTML.time(h.since))</td>"
                    + "<td><a data-explain=\"\(HTML.escape(h.key))\" href=\"/profiles/\(HTML.path(p.profileID))/explain/\(HTML.path(h.key))\">why?</a></td></tr>\n"
            }
            body += "</tbody></table>\n"
        }
        body += "<h2>Timeline</h2>\n"
        if p.timeline.isEmpty {
            body += "<p class=muted id=timeline>Nothing yet.</p>\n"
        } else {
            body += "<table id=timeline><thead><tr><th>When</th><th>What</th><th>Definition</th><th>Destination</th><th>Detail</th></tr></thead><tbody>\n"
            for t in p.timeline {
                let what = switch t.kind {
                case .value: "took a value"
                case .ended: "value ended"
                case .sent: "change sent"
                case .email: "email event"
                }
                body += "<tr data-kind=\"\(t.kind.rawValue)\"\(t.key.map { " data-key=\"\(HTML.escape($0))\"" } ?? "")>"
                    + "<td>\(HTML.time(t.at))</td><td>\(what)</td><td>\(t.key.map(HTML.escape) ?? "")</td>"
                    + "<td>\(t.destination.map(HTML.escape) ?? "")</td><td><code>\(HTML.user(t.detail))</code></td></tr>\n"
            }
            body += "</tbody></table>\n"
        }
        return HTML.page(title: p.profileID, body: body)
    }

    /// `GET /profiles/ID/explain/KEY`: why the profile holds (or does not hold) `key` now.
    public static func explanation(profileID: String, key: String, _ text: ExplanationText) -> String {
        let body = "<p><a href=\"/profiles/\(HTML.path(profileID))\">← \(HTML.user(profileID))</a></p>"
            + "<h1>Why \(HTML.user(profileID)) <span class=muted>· \(HTML.escape(key))</span></h1>\n"
            + "<pre id=explanation>\(text.lines.map { HTML.user($0) }.joined(separator: "\n"))</pre>\n"
        return HTML.page(title: "\(key) · \(profileID)", body: body)
    }
}
