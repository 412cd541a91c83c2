import EngageCore
import Foundation
import Testing

@Suite("Definition parsing and validation")
struct DefinitionParserTests {
    func parse(_ json: String) -> Result<Definition, DefinitionValidationError> {
        DefinitionParser.parse(try! JSONValue.parse(json))
    }

    func issues(_ json: String) -> [String] {
        switch parse(json) {
        case .success: return []
        case .failure(let e): return e.issues.map(\.description)
        }
    }

    @Test("a full audience parses with defaults and the derived key")
    func audience() throws {
        let d = try parse("""
            {"name": "Order Completed Last 30days", "type": "audience",
             "condition": {"all": [
                {"event": "Order Completed", "within": "30d", "count": {"at_least": 2},
                 "where": [{"property": "total", "gt": 100}, {"property": "address.city", "equals": "Paris"}]},
                {"not": {"trait": "plan", "one_of": ["free", "trial"]}},
                {"any": [{"audience": "vip"}, {"event": "Signed Up", "between": ["60d", "30d"]}]}]}}
            """).get()
        #expect(d.key == "order_completed_last_30days")
        #expect(d.keyIsExplicit == false)
        #expect(d.kind == .audience)
        #expect(d.syncEvery == SyncDuration(amount: 1, unit: .hours))
        #expect(d.sendAs == .identify)
        #expect(d.includeAnonymous == false && d.enabled == true && d.destinations == nil)
        #expect(d.referencedAudiences == ["vip"])
        guard case .condition(.all(let items)) = d.source, case .event(let e) = items[0] else {
            Issue.record("unexpected shape")
            return
        }
        #expect(e.count == .atLeast(2))
        #expect(e.window == .within(SyncDuration(amount: 30, unit: .days)))
        #expect(e.filters[1].path.segments == ["address", "city"])
        #expect(e.filters[0].op == .gt(100))
    }

    @Test("a field given twice in a definition file is a problem with its path, beside the others")
    func duplicateFields() {
        let text = #"[{"name": "A", "key": "a", "key": "b", "type": "audience", "condition": {"event": "E", "within": "1d", "within": "2d"}}, {"name": "", "type": "audience", "condition": {"event": "E"}}]"#
        guard case .failure(let error) = DefinitionParser.parseDocument(Data(text.utf8)) else {
            Issue.record("a duplicated field was accepted")
            return
        }
        let paths = error.issues.map(\.path)
        #expect(paths.contains("[0].key"))
        #expect(paths.contains("[0].condition.within"))
        #expect(paths.contains("[1].name"), "the other problems of the file are still reported")
    }

    @Test("every trait aggregate parses; property required for all but count")
    func traits() throws {
        for aggregate in TraitValue.Aggregate.allCases {
            let property = aggregate == .count ? "" : #", "property": "total""#
            let d = try parse(#"{"name": "T \#(aggregate.rawValue)", "type": "trait", "value": {"aggregate": "\#(aggregate.rawValue)", "event": "Order Completed"\#(property), "within": "90d"}}"#).get()
            guard case .aggregate(let value) = d.source else { Issue.record("not an aggregate"); continue }
            #expect(value.aggregate == aggregate)
        }
        #expect(issues(#"{"name": "T", "type": "trait", "value": {"aggregate": "sum", "event": "E"}}"#)
            == ["value.property: is required for the sum aggregate"])
    }

    @Test("sql replaces condition or value; timeout goes with it; a trailing semicolon is not part of the body")
    func sqlDefinitions() throws {
        let audience = try parse(#"{"name": "High LTV", "type": "audience", "sql": "SELECT id AS user_id FROM app.users; \n"}"#).get()
        #expect(audience.sqlQuery == SQLQuery(text: "SELECT id AS user_id FROM app.users; \n", timeoutSeconds: 600))
        #expect(audience.sqlQuery?.body == "SELECT id AS user_id FROM app.users")
        #expect(audience.referencedAudiences.isEmpty)
        #expect(audience.exitValue == .bool(false))
        let trait = try parse(#"{"name": "Plan", "type": "trait", "sql": "SELECT 1", "timeout": "30s"}"#).get()
        #expect(trait.sqlQuery?.timeoutSeconds == 30)
        #expect(trait.exitValue == .null)
        #expect(try parse(#"{"name": "P", "type": "trait", "sql": "SELECT 1", "timeout": "2h"}"#).get().sqlQuery?.timeoutSeconds == 7_200)
        #expect(issues(#"{"name": "A", "type": "audience", "sql": "SELECT 1", "condition": {"event": "E"}}"#)
                == [#"sql: replaces "condition"; give one of them, not both"#])
        #expect(issues(#"{"name": "T", "type": "trait", "sql": "SELECT 1", "value": {"aggregate": "count", "event": "E"}}"#)
                == [#"sql: replaces "value"; give one of them, not both"#])
        #expect(issues(#"{"name": "A", "type": "audience", "condition": {"event": "E"}, "timeout": "1m"}"#)
                == [#"timeout: is the time limit of a "sql" query; this definition has none"#])
        #expect(issues(#"{"name": "A", "type": "audience", "sql": " ; "}"#) == ["sql: must be a SELECT query"])
        #expect(issues(#"{"name": "A", "type": "audience", "sql": 5}"#) == ["sql: must be a string, got 5"])
        #expect(issues(#"{"name": "A", "type": "audience", "sql": "SELECT 1", "timeout": "0s"}"#).first?.hasPrefix("timeout: must be a duration") == true)
    }

    @Test("paths: dots nest, backslash-dot is a literal dot")
    func paths() {
        #expect(PropertyPath(parsing: "address.city")?.segments == ["address", "city"])
        #expect(PropertyPath(parsing: #"utm\.source"#)?.segments == ["utm.source"])
        #expect(PropertyPath(parsing: #"a.b\.c.d"#)?.segments == ["a", "b.c", "d"])
        #expect(PropertyPath(parsing: "a..b") == nil)
        #expect(PropertyPath(parsing: "") == nil)
        #expect(PropertyPath(parsing: ".a") == nil)
    }

    @Test("durations")
    func durations() {
        #expect(SyncDuration(parsing: "90m")?.seconds == 5_400)
        #expect(SyncDuration(parsing: "2w")?.intervalText == "2 weeks")
        for bad in ["", "0d", "-1d", "1", "d", "1.5h", "1y", "1 d", "99999999d"] {
            #expect(SyncDuration(parsing: bad) == nil, "\(bad)")
        }
    }

    @Test("durations past their bounds and NUL in any string are refused with their paths")
    func boundsAndNUL() {
        let found = issues(#"""
            {"name": "Bounds", "type": "audience", "sync_every": "9999999w", "reconcile_every": "36501d",
             "condition": {"all": [
                {"event": "Order Completed", "within": "9999999w"},
                {"event": "Order\u0000Completed"},
                {"trait": "plan", "equals": "pro\u0000"}]}}
            """#)
        #expect(found.contains { $0.hasPrefix("sync_every: must be at most 100 years") })
        #expect(found.contains { $0.hasPrefix("reconcile_every: must be at most 100 years") })
        #expect(found.contains { $0.hasPrefix("condition.all[0].within: must be at most 100 years") })
        #expect(found.contains("condition.all[1].event: must not contain the NUL character (\\u0000)"), "\(found)")
        #expect(found.contains("condition.all[2].equals: must not contain the NUL character (\\u0000)"))
        let sql = issues(#"{"name": "Slow", "type": "audience", "sql": "SELECT user_id FROM t", "timeout": "2d"}"#)
        #expect(sql.contains { $0.hasPrefix("timeout: must be at most 24 hours") }, "\(sql)")
        #expect(issues(#"{"name": "Long", "type": "audience", "condition": {"event": "E", "within": "36500d"}}"#).isEmpty)
    }

    @Test("every problem is reported with its path, not just the first")
    func everyProblem() {
        let found = issues("""
            {"name": "Bad", "type": "audience", "sync_every": "5x", "colour": "red",
             "condition": {"all": [
                {"event": "A", "count": {"at_least": -1}},
                {"any": []},
                {"event": "B", "between": ["30d", "60d"]},
                {"trait": "plan", "equals": "pro", "gt": 3},
                {"event": "C", "where": [{"property": "x", "gt": "ten"}], "within": "soon"},
                {"evnt": "typo"}]}}
            """)
        #expect(found.contains("condition.all[0].count.at_least: must be a non-negative integer, got -1"))
        #expect(found.contains("condition.all[1].any: must have at least one condition"))
        #expect(found.contains { $0.hasPrefix("condition.all[2].between: is in the wrong order") })
        #expect(found.contains { $0.hasPrefix("condition.all[3]: has several operators") })
        #expect(found.contains("condition.all[4].where[0].gt: must be a number, got \"ten\""))
        #expect(found.contains { $0.hasPrefix("condition.all[4].within: must be a duration") })
        #expect(found.contains { $0.hasPrefix("condition.all[5]: must have one of") })
        #expect(found.contains { $0.hasPrefix("sync_every: must be a duration") })
        #expect(found.contains { $0.hasPrefix("colour: unknown field") })
        #expect(found.count == 9)
    }

    @Test("type-specific and top-level mistakes")
    func topLevel() {
        #expect(issues(#"{"type": "audience", "condition": {"audience": "x"}}"#) == ["name: is required"])
        #expect(issues(#"{"name": "X", "type": "segment"}"#) == [#"type: must be "audience" or "trait", got "segment""#])
        #expect(issues(#"{"name": "X", "type": "audience"}"#) == [#"condition: is required for an audience (or "sql": a query returning its members)"#])
        #expect(issues(#"{"name": "!!!", "type": "audience", "condition": {"audience": "a"}}"#)
            == [#"name: gives an empty key (no letters or digits); set an explicit "key""#])
        #expect(issues(#"{"name": "Email", "type": "audience", "condition": {"audience": "a"}}"#).first?.contains("reserved") == true)
        #expect(issues(#"{"name": "X", "key": "Bad Key", "type": "audience", "condition": {"audience": "a"}}"#).first?.hasPrefix("key: must match") == true)
        #expect(issues(#"{"name": "X", "type": "trait", "send_as": "track", "value": {"aggregate": "count", "event": "E"}}"#)
            == ["send_as: traits are always sent as identify calls"])
        #expect(issues(#"{"name": "X", "type": "audience", "condition": {"event": "E", "within": "1d", "between": ["2d", "1d"]}}"#)
            == [#"condition: has both "within" and "between"; use one"#])
        #expect(issues(#"{"name": "X", "type": "audience", "condition": {"trait": "a", "before": "yesterday"}}"#).first?
            .hasPrefix("condition.before: must be an ISO-8601 timestamp") == true)
    }

    @Test("deep nesting is rejected with a clear error, without recursion trouble")
    func deepNesting() {
        var json = #"{"event": "E"}"#
        for _ in 0..<200 { json = #"{"not": \#(json)}"# }
        let found = issues(#"{"name": "Deep", "type": "audience", "condition": \#(json)}"#)
        #expect(found.count == 1)
        #expect(found.first?.contains("nest deeper than \(DefinitionParser.maxDepth) levels") == true)
    }

    @Test("a file may hold an array; paths carry the index")
    func arrays() {
        let data = Data(#"[{"name": "A", "type": "audience", "condition": {"audience": "x"}}, {"name": "B", "type": "trait"}]"#.utf8)
        guard case .failure(let e) = DefinitionParser.parseDocument(data) else {
            Issue.record("expected a failure")
            return
        }
        #expect(e.issues.map(\.description) == [#"[1].value: is required for a trait (or "sql": a query returning each profile's value)"#])
        guard case .failure(let bad) = DefinitionParser.parseDocument(Data("{not json".utf8)) else {
            Issue.record("expected a failure")
            return
        }
        #expect(bad.issues.first?.reason.hasPrefix("invalid JSON") == true)
    }

    @Test("cycles and unknown references are found across definitions")
    func graph() throws {
        func audience(_ key: String, _ refs: [String]) throws -> Definition {
            let items = refs.map { #"{"audience": "\#($0)"}"# }.joined(separator: ",")
            let cond = refs.isEmpty ? #"{"event": "E"}"# : #"{"any": [\#(items)]}"#
            return try DefinitionParser.parse(try JSONValue.parse(#"{"name": "\#(key)", "key": "\#(key)", "type": "audience", "condition": \#(cond)}"#)).get()
        }
        let a = try audience("a", ["b"]), b = try audience("b", ["c"]), c = try audience("c", ["a"]), d = try audience("d", ["zzz"])
        let known = ["a": a, "b": b, "c": c, "d": d]
        #expect(DefinitionGraph.cycle(from: "a", known: known) == ["a", "b", "c", "a"])
        let problems = DefinitionGraph.problems(checking: [(a, "x.json"), (d, "y.json")], known: known)
        #expect(problems.map(\.description).contains("x.json:condition: audience references form a cycle: a → b → c → a"))
        #expect(problems.map(\.description).contains(#"y.json:condition.any[0].audience: refers to unknown audience "zzz""#))
    }
}
