import EngageStore
import Foundation

/// The status page: server-rendered HTML and CSS, no script and nothing fetched from
/// elsewhere, from the store's reads (``StatusStore``, ``StatusPageStore``). Emails are masked.
/// Elements carry `data-` attributes naming what they show, for scripts and tests.
public enum StatusPages {
    /// `GET /`: every (definition, destination) pair, paused destinations highlighted, totals on top.
    public static func overview(_ pairs: [PairStatus]) -> String {
        let paused = Set(pairs.compactMap { $0.destinationPausedAt == nil ? nil : $0.destination })
        func total(_ field: (PairStatus) -> Int) -> Int { pairs.reduce(0) { $0 + field($1) } }
        var body = "<h1>Syncs</h1>\n" + searchForm + "<div class=totals>"
        for (label, field, value) in [("Pairs", "pairs", pairs.count), ("Pending", "pending", total(\.pending)),
                                      ("Failed", "failed", total(\.failed)), ("Skipped", "skipped", total(\.skipped)),
                                      ("Paused destinations", "paused", paused.count)] {
            body += "<div data-total=\"\(field)\"><span class=muted>\(label)</span><b>\(HTML.number(value))</b></div>"
        }
        body += "</div>\n"
        for name in paused.sorted() {
            let reason = pairs.first { $0.destination == name }?.destinationPausedReason ?? "paused"
            body += "<p class=alert data-paused=\"\(HTML.escape(name))\">Delivery to <a href=\"/destinations/\(HTML.path(name))\">"
                + "\(HTML.escape(name))</a> is paused: \(HTML.escape(reason)). Fix its settings or run "
                + "<code>engage-sync destination resume \(HTML.escape(name))</code>.</p>\n"
        }
        guard !pairs.isEmpty else {
            return HTML.page(title: "Syncs", body: body + "<p>Nothing to show: define a definition and add a destination first.</p>")
        }
        body += """
            <table id=pairs><thead><tr><th>Definition</th><th>Destination</th><th class=n>Members</th>
            <th class=n>Delivered</th><th class=n>Pending</th><th class=n>Failed</th><th class=n>Skipped</th>
            <th>Last run</th><th class=n>Took</th><th>When</th><th>Next due</th></tr></thead><tbody>

            """
        for p in pairs {
            let isPaused = p.destinationPausedAt != nil
            body += "<tr data-key=\"\(HTML.escape(p.key))\" data-destination=\"\(HTML.escape(p.destination))\""
                + (isPaused ? " class=paused" : "") + ">"
                + "<td><a href=\"/definitions/\(HTML.path(p.key))\">\(HTML.escape(p.key))</a>"
                + (p.type == .trait ? " <span class=muted>trait</span>" : "") + "</td>"
                + "<td><a href=\"/destinations/\(HTML.path(p.destination))\">\(HTML.escape(p.destination))</a>"
                + (isPaused ? " <span class=\"badge bad\">paused</span>" : "") + "</td>"
                + cell("members", p.members) + cell("delivered", p.deliveredTrue) + cell("pending", p.pending)
                + cell("failed", p.failed) + cell("skipped", p.skipped)
                + "<td class=nowrap><span data-field=\"last-run-status\">\(HTML.badge(p.lastRunStatus))</span> "
                + "<span class=muted data-field=\"last-run-mode\">\(HTML.escape(p.lastRunMode?.rawValue ?? ""))</span></td>"
                + "<td class=n>\(HTML.seconds(p.lastRunSeconds))</td><td>\(HTML.time(p.lastRunAt))</td>"
                + "<td>\(p.nextDue == nil ? "disabled" : HTML.time(p.nextDue))</td></tr>\n"
        }
        return HTML.page(title: "Syncs", body: body + "</tbody></table>")
    }

    static func cell(_ field: String, _ value: Int) -> String {
        "<td class=n data-field=\"\(field)\" data-value=\"\(value)\">\(HTML.number(value))</td>"
    }

    /// `GET /definitions/KEY`: the definition, its size over time, its last runs, recent changes
    /// and failures grouped by reason.
    public static func definition(_ d: DefinitionSummary, runs: [DefinitionRun], changes: [RecentChange],
                                  failures: [FailureGroup]) -> String {
        var body = "<p><a href=\"/\">← all syncs</a></p><h1>\(HTML.escape(d.name)) <span class=muted>\(HTML.escape(d.key))"
            + " · \(d.type.rawValue) · every \(HTML.escape(d.syncEvery))\(d.enabled ? "" : " · disabled")</span></h1>\n"
        body += "<div class=totals><div data-total=\"members\"><span class=muted>Members now</span><b>\(HTML.number(d.members))</b></div>"
            + "<div data-total=\"runs\"><span class=muted>Runs shown</span><b>\(HTML.number(runs.count))</b></div></div>\n"
        body += "<h2>Size over time</h2>\n" + SizeChart.svg(runs)
        let recent = runs.suffix(20).reversed()
        body += """
            <h2>Last runs</h2><table id=runs><thead><tr><th>Run</th><th>Destination</th><th>Mode</th><th>Status</th>
            <th class=n>Members</th><th class=n>Entered</th><th class=n>Exited</th><th class=n>Changed</th><th class=n>Skipped</th>
            <th class=n>Evaluate</th><th class=n>Diff</th><th class=n>Deliver</th><th class=n>Took</th><th>Started</th></tr></thead><tbody>

            """
        for r in recent {
            body += "<tr data-run=\"\(r.id)\"><td>\(r.id)</td><td>\(HTML.escape(r.destination))</td>"
                + "<td>\(r.mode.rawValue)\(r.evaluation.flatMap { $0.rawValue == r.mode.rawValue ? nil : " <span class=muted>(\($0.rawValue) evaluation)</span>" } ?? "")</td>"
                + "<td>\(HTML.badge(r.status))\(r.error.map { " <span class=bad>\(HTML.user($0))</span>" } ?? "")</td>"
                + cell("members", r.members) + cell("entered", r.entered) + cell("exited", r.exited)
                + cell("changed", r.changed) + cell("skipped", r.skipped)
                + "<td class=n>\(HTML.milliseconds(r.evaluateMs))</td><td class=n>\(HTML.milliseconds(r.diffMs))</td>"
                + "<td class=n>\(HTML.milliseconds(r.deliverMs))</td><td class=n>\(HTML.seconds(r.seconds))</td>"
                + "<td>\(HTML.time(r.startedAt))</td></tr>\n"
        }
        body += "</tbody></table>\n<h2>Failures</h2>\n"
        if failures.isEmpty {
            body += "<p class=muted id=failures>No unresolved failures.</p>\n"
        } else {
            body += "<table id=failures><thead><tr><th>Destination</th><th>Status</th><th>Reason</th><th class=n>HTTP</th>"
                + "<th class=n>Rows</th><th>Examples</th><th>Latest</th></tr></thead><tbody>\n"
            for f in failures {
                body += "<tr data-status=\"\(f.status.rawValue)\"><td>\(HTML.escape(f.destination))</td><td>\(HTML.badge(f.status))</td>"
                    + "<td data-field=\"reason\">\(HTML.user(f.reason))</td><td class=n>\(f.statusCode.map(String.init) ?? "–")</td>"
                    + cell("rows", f.rows) + "<td>\(f.examples.map { HTML.user($0) }.joined(separator: ", "))</td>"
                    + "<td>\(HTML.time(f.lastAt))</td></tr>\n"
            }
            body += "</tbody></table>\n"
        }
        body += "<h2>Recent changes</h2>\n"
        if changes.isEmpty {
            body += "<p class=muted>No changes written yet.</p>\n"
        } else {
            body += "<table id=changes><thead><tr><th>Run</th><th>Destination</th><th>User</th><th>Change</th><th>Value</th>"
                + "<th>Status</th><th>Written</th></tr></thead><tbody>\n"
            for c in changes {
                body += "<tr><td>\(c.runID)</td><td>\(HTML.escape(c.destination))</td><td>\(HTML.user(c.userID))</td>"
                    + "<td>\(c.op.rawValue)</td><td><code>\(HTML.user(c.value))</code></td>"
                    + "<td>\(HTML.badge(c.status))\(c.reason.map { " <span class=muted>\(HTML.user($0))</span>" } ?? "")</td>"
                    + "<td>\(HTML.time(c.createdAt))</td></tr>\n"
            }
            body += "</tbody></table>\n"
        }
        if let sql = d.sql {
            body += "<h2>Query</h2>\n<pre id=query>\(HTML.escape(sql))</pre>\n"
        }
        body += "<h2>Definition</h2>\n<pre id=definition>\(HTML.escape(d.definitionJSON))</pre>\n"
        return HTML.page(title: d.name, body: body)
    }

    /// `GET /destinations/NAME`: whether it is paused and why, delivery rate and time to deliver
    /// over its last runs, and failures by HTTP status. Never its token.
    public static func destination(_ d: DestinationSummary, runs: [DestinationRun], failures: [StatusCodeFailures]) -> String {
        var body = "<p><a href=\"/\">← all syncs</a></p><h1>\(HTML.escape(d.name)) <span class=muted>Vero at "
            + "\(HTML.escape(d.baseURL)) · \(HTML.escape(String(format: "%g", d.rate))) requests/s · \(d.concurrency) at once · "
            + "\(d.maxAttempts) attempts\(d.enabled ? "" : " · disabled")</span></h1>\n"
        if let pausedAt = d.pausedAt {
            body += "<p class=alert id=paused>Paused since \(HTML.time(pausedAt)): \(HTML.escape(d.pausedReason ?? "no reason recorded")). "
                + "Nothing is claimed for it until its settings change or <code>engage-sync destination resume \(HTML.escape(d.name))</code>.</p>\n"
        } else {
            body += "<p class=ok id=active>Delivering.</p>\n"
        }
        body += """
            <h2>Delivery over the last runs</h2><table id=runs><thead><tr><th>Run</th><th>Definition</th><th>Mode</th><th>Status</th>
            <th class=n>Rows</th><th class=n>Delivered</th><th class=n>Pending</th><th class=n>Failed</th><th class=n>Rejected</th>
            <th class=n>Skipped</th><th class=n>Rate</th><th class=n>p50 to 2xx</th><th class=n>p95 to 2xx</th><th>Started</th></tr></thead><tbody>

            """
        for r in runs {
            body += "<tr data-run=\"\(r.id)\"><td>\(r.id)</td><td>\(r.key.map { "<a href=\"/definitions/\(HTML.path($0))\">\(HTML.escape($0))</a>" } ?? "forward")</td>"
                + "<td>\(r.mode.rawValue)</td><td>\(HTML.badge(r.status))</td>"
                + cell("rows", r.rows) + cell("delivered", r.delivered) + cell("pending", r.pending) + cell("failed", r.failed)
                + cell("rejected", r.rejected) + cell("skipped", r.skipped)
                + "<td class=n>\(r.perSecond.map { String(format: "%.0f/s", $0) } ?? "–")</td>"
                + "<td class=n>\(HTML.milliseconds(r.p50Ms))</td><td class=n>\(HTML.milliseconds(r.p95Ms))</td>"
                + "<td>\(HTML.time(r.startedAt))</td></tr>\n"
        }
        body += "</tbody></table>\n<h2>Failures by HTTP status</h2>\n"
        if failures.isEmpty {
            body += "<p class=muted id=failures>No unresolved failures.</p>\n"
        } else {
            body += "<table id=failures><thead><tr><th class=n>HTTP</th><th>Status</th><th class=n>Rows</th><th>Latest reason</th>"
                + "<th>Latest</th></tr></thead><tbody>\n"
            for f in failures {
                body += "<tr data-code=\"\(f.statusCode.map(String.init) ?? "none")\"><td class=n>\(f.statusCode.map(String.init) ?? (f.status == .skipped ? "not sent" : "no answer"))</td>"
                    + "<td>\(HTML.badge(f.status))</td>" + cell("rows", f.rows)
                    + "<td data-field=\"reason\">\(HTML.user(f.reason))</td><td>\(HTML.time(f.lastAt))</td></tr>\n"
            }
            body += "</tbody></table>\n"
        }
        return HTML.page(title: d.name, body: body)
    }

    /// The sign-in form of a page bound beyond this machine (`ENGAGE_UI_TOKEN`).
    public static func login(failed: Bool) -> String {
        HTML.page(title: "Sign in", body: """
            <h1>Sign in</h1>\(failed ? "<p class=alert>That token is not the one this server was started with.</p>" : "")
            <form method=post action="/login"><label for=token>The token in <code>ENGAGE_UI_TOKEN</code></label>
            <input id=token name=token type=password autocomplete=current-password autofocus><button type=submit>Sign in</button></form>
            """)
    }

    /// A page that says one thing: a key or a name that is not there, a database that cannot be read.
    public static func message(_ title: String, _ text: String) -> String {
        HTML.page(title: title, body: "<p><a href=\"/\">← all syncs</a></p><h1>\(HTML.escape(title))</h1><p>\(HTML.escape(text))</p>")
    }
}
