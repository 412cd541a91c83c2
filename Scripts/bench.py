#!/usr/bin/env python3
"""Runs the benchmark scenarios of issue 7 and prints each figure beside its floor.

Driven by Scripts/bench.sh, which builds the release binary and starts a private PostgreSQL
(DATABASE_URL). Everything here talks to that server with psql and runs the real binary.
"""
import argparse, json, os, random, re, signal, subprocess, sys, tempfile, time, urllib.parse

BIN = os.environ["ENGAGE_SYNC_BIN"]
BASE_URL = os.environ["DATABASE_URL"]
TOKEN = "bench-token"
# Requests in flight, for the engine's delivery and for wrk alike. The engine records each
# result before its worker sends again (a kill re-sends at most this many), so it needs many
# in flight to hide the recording's round trip: 100k rows went at 5,900/s with 64, 6,900/s with 128.
CONCURRENCY = 128

DEFINITIONS = [
    {"name": "Order Completed Last 30days", "type": "audience", "destinations": ["sink"],
     "condition": {"event": "Order Completed", "within": "30d"}},
    {"name": "Big Spenders", "type": "audience", "destinations": ["sink"],
     "condition": {"event": "Order Completed", "within": "90d", "where": [{"property": "total", "gt": 150}]}},
    {"name": "Never Opened Email", "type": "audience", "destinations": ["sink"],
     "condition": {"event": "Email Opened", "within": "90d", "count": {"at_most": 0}}},
    {"name": "Pro Recent Buyers", "type": "audience", "destinations": ["sink"],
     "condition": {"all": [{"audience": "order_completed_last_30days"}, {"trait": "plan", "equals": "pro"}]}},
    {"name": "Revenue 90d", "type": "trait", "destinations": ["sink"],
     "value": {"aggregate": "sum", "event": "Order Completed", "property": "total", "within": "90d"}},
    {"name": "Last Product Viewed", "type": "trait", "destinations": ["sink"],
     "value": {"aggregate": "last", "event": "Product Viewed", "property": "product"}},
    # Every profile: the end-to-end full sync of a 1M-member audience, delivered to the sandbox.
    {"name": "All Customers", "type": "audience", "destinations": ["vero"], "condition": {"trait": "plan", "exists": True}},
]
KEYS = ["order_completed_last_30days", "big_spenders", "never_opened_email", "pro_recent_buyers", "revenue_90d",
        "last_product_viewed", "all_customers"]


def log(message):
    print(message, file=sys.stderr, flush=True)


def db_url(name):
    parts = urllib.parse.urlsplit(BASE_URL)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def psql(url, sql, timing=False):
    """Runs SQL in one psql session; returns (stdout, [milliseconds of each statement])."""
    script = ("\\timing on\n" if timing else "") + sql
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t"], input=script,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr}\n{sql[:500]}")
    times = [float(t) for t in re.findall(r"^Time: ([0-9.]+) ms", out.stdout, re.M)]
    return out.stdout, times


def engage(url, args, stdin=None, check=True):
    """Runs the binary under /usr/bin/time; returns (stdout, seconds, peak KB)."""
    started = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB=%M", BIN] + args + ["--database-url", url],
                         capture_output=True, text=True, input=stdin,
                         env=dict(os.environ, BENCH_TOKEN=TOKEN))
    seconds = time.monotonic() - started
    peak = int(re.findall(r"PEAK_KB=(\d+)", out.stderr)[-1])
    if check and out.returncode not in (0, 3):
        raise RuntimeError(f"engage-sync {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout, seconds, peak


def generate(url, profiles, per_profile):
    log(f"   generating {profiles:,} profiles and {profiles * per_profile:,} events")
    psql(url, f"""
        SELECT setseed(0.42);
        INSERT INTO engage.profiles (profile_id, user_id, email, traits)
        SELECT 'p' || i, 'u' || i, 'u' || i || '@example.com',
               jsonb_build_object('plan', (ARRAY['free', 'pro', 'enterprise'])[1 + i % 3],
                                  'country', (ARRAY['US', 'FR', 'DE', 'NO'])[1 + i % 4])
        FROM generate_series(1, {profiles}) i;
        INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
        SELECT 'e' || g, 'p' || (1 + floor(random() * {profiles}))::int,
               (ARRAY['Order Completed', 'Product Viewed', 'Email Opened', 'Signed Up'])[1 + floor(random() * 4)::int],
               jsonb_build_object('total', round((random() * 200)::numeric, 2), 'product', 'sku-' || floor(random() * 50)::int),
               now() - random() * interval '90 days'
        FROM generate_series(1, {profiles * per_profile}) g;
        VACUUM ANALYZE engage.profiles;
        VACUUM ANALYZE engage.events;
    """)


def churn(url, profiles):
    """1% of profiles change: half lose their recent events, half get new ones."""
    n = max(1, profiles // 200)
    psql(url, f"""
        SELECT setseed(0.7);
        UPDATE engage.events SET occurred_at = occurred_at - interval '120 days'
        WHERE profile_id IN (SELECT 'p' || (1 + floor(random() * {profiles}))::int FROM generate_series(1, {n}));
        INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
        SELECT 'churn-' || g || '-' || k, 'p' || (1 + floor(random() * {profiles}))::int, k,
               jsonb_build_object('total', 199, 'product', 'sku-new'), now() - interval '1 hour'
        FROM generate_series(1, {n}) g, unnest(ARRAY['Order Completed', 'Product Viewed', 'Email Opened']) k;
        ANALYZE engage.events;
    """)


def confirm_sink(url):
    """The "sink" destination is never sent to (delivering every definition would only measure
    delivery again): its rows are marked delivered and the ledger filled as a 2xx would, so the
    incremental runs that follow diff against a confirmed ledger."""
    psql(url, """
        WITH d AS (UPDATE engage.outbox o SET status = 'delivered', delivered_at = now(), attempts = 1
                   FROM engage.destinations dst
                   WHERE dst.id = o.destination_id AND dst.name = 'sink' AND o.status = 'pending'
                   RETURNING o.id, o.destination_id, o.computation_id, o.profile_id, o.vero_id, o.email, o.value)
        INSERT INTO engage.ledger (destination_id, computation_id, vero_id, profile_id, email, value, confirmed_at, outbox_id)
        SELECT destination_id, computation_id, vero_id, profile_id, email, value, now(), id FROM d
        ON CONFLICT (destination_id, computation_id, vero_id) DO UPDATE
            SET value = EXCLUDED.value, profile_id = EXCLUDED.profile_id, email = EXCLUDED.email,
                confirmed_at = EXCLUDED.confirmed_at, outbox_id = EXCLUDED.outbox_id;
        VACUUM ANALYZE engage.outbox;
        VACUUM ANALYZE engage.ledger;
    """)


def run_times(url, key):
    out, _ = psql(url, f"""
        SELECT r.evaluate_ms, r.diff_ms, r.members, r.entered + r.exited + r.changed
        FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
        WHERE c.key = '{key}' ORDER BY r.id DESC LIMIT 1""")
    evaluate, diff, members, changes = out.strip().split("|")
    return float(evaluate), float(diff), int(members), int(changes)


def floor_query(url, key, previous_table=None):
    """The compiled query alone (CREATE TEMP TABLE AS), plus a bare INSERT … SELECT of its rows
    (full) or a bare EXCEPT against the previous result (incremental). Returns (ms, table)."""
    script, _, _ = engage(url, ["preview", key, "--sql"])
    prepare, execute = script.rsplit("EXECUTE engage_preview", 1)
    execute = "engage_preview" + execute
    table = f"floor_{key}"
    sql = f"""
        {prepare}
        DROP TABLE IF EXISTS {table}_new;
        CREATE TABLE {table}_new AS EXECUTE {execute.strip()}

    """
    if previous_table:
        sql += f"SELECT count(*) FROM (SELECT * FROM {table}_new EXCEPT SELECT * FROM {previous_table}) x;\n"
    else:
        sql += f"CREATE TEMP TABLE bare (profile_id text, value jsonb);\nINSERT INTO bare SELECT profile_id, to_jsonb(value) FROM {table}_new;\n"
    _, times = psql(url, sql, timing=True)
    # times: PREPARE, DROP, CREATE AS, then EXCEPT or (CREATE bare, INSERT)
    if previous_table:
        total = times[2] + times[3]
    else:
        total = times[2] + times[4]
    psql(url, f"DROP TABLE IF EXISTS {table}; ALTER TABLE {table}_new RENAME TO {table};")
    return total, table


def sandbox(port_file):
    proc = subprocess.Popen([BIN, "sandbox", "--port", "0", "--token", TOKEN], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = int(re.search(r":(\d+)$", line.strip()).group(1))
    return proc, port


def wrk(port, concurrency, seconds=10):
    body = json.dumps({"auth_token": TOKEN, "id": "u1", "email": "u1@example.com",
                       "data": {"all_customers": True, "email": "u1@example.com", "id": "u1"}})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n')
        script = f.name
    out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "-s", script,
                          f"http://127.0.0.1:{port}/api/v2/users/track"], capture_output=True, text=True)
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", out.stdout).group(1))


def ingest_bench(url, work, events):
    """ingest of an NDJSON file vs COPY of the same rows from CSV."""
    path = os.path.join(work, "events.ndjson")
    csv = os.path.join(work, "events.csv")
    rnd = random.Random(7)
    with open(path, "w") as nd, open(csv, "w") as c:
        for i in range(events):
            user = f"iu{rnd.randrange(events // 10 + 1)}"
            ts = f"2025-0{1 + i % 9}-1{i % 10}T10:00:00.000Z"
            props = {"total": round(rnd.random() * 100, 2), "product": f"sku-{i % 50}"}
            nd.write(json.dumps({"type": "track", "messageId": f"im{i}", "userId": user, "event": "Order Completed",
                                 "properties": props, "timestamp": ts}) + "\n")
            c.write(f'im{i}\t{user}\tOrder Completed\t{json.dumps(props)}\t{ts}\n')
    size = os.path.getsize(path)
    stdout, seconds, peak = engage(url, ["ingest", path])
    ours = events / seconds
    _, times = psql(url, f"""
        CREATE TEMP TABLE copy_floor (message_id text PRIMARY KEY, profile_id text, event text, properties jsonb, occurred_at timestamptz);
        \\copy copy_floor FROM '{csv}'
    """, timing=True)
    floor = events / (times[-1] / 1000)
    # A second, informative floor: COPY into a table shaped like engage.events (its primary key,
    # its two indexes and its foreign key to the profiles ingest just created).
    _, times = psql(url, f"""
        CREATE TABLE bench_copy_shaped (LIKE engage.events INCLUDING ALL,
                                        FOREIGN KEY (profile_id) REFERENCES engage.profiles);
        \\copy bench_copy_shaped (message_id, profile_id, event, properties, occurred_at) FROM '{csv}'
    """, timing=True)
    shaped = events / (times[-1] / 1000)
    psql(url, "DROP TABLE bench_copy_shaped")
    return {"events": events, "file_bytes": size, "ours_per_s": ours, "floor_per_s": floor, "shaped_floor_per_s": shaped,
            "peak_kb": peak, "output": stdout.strip()}


def bench_size(profiles, per_profile, work, full_report):
    name = f"bench_{profiles}"
    admin = BASE_URL
    psql(admin, f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
    url = db_url(name)
    result = {"profiles": profiles, "events": profiles * per_profile, "definitions": {}}
    _, _, peak = engage(url, ["migrate"])
    generate(url, profiles, per_profile)
    box, port = sandbox(None)
    try:
        engage(url, ["destination", "add", "vero", "--base-url", f"http://127.0.0.1:{port}", "--token-env", "BENCH_TOKEN",
                     "--rate", "100000", "--concurrency", str(CONCURRENCY)])
        engage(url, ["destination", "add", "sink", "--base-url", "http://127.0.0.1:9", "--token-env", "BENCH_TOKEN"])
        defs = os.path.join(work, "definitions.json")
        with open(defs, "w") as f:
            json.dump(DEFINITIONS, f)
        engage(url, ["define", defs])
        peaks = {"migrate": peak}
        tables = {}
        log(f"   full syncs ({profiles:,} profiles)")
        for key in KEYS:
            if key == "all_customers" and not full_report:
                continue
            floor_ms, tables[key] = floor_query(url, key)
            _, _, peak = engage(url, ["run", "--key", key, "--no-deliver"])
            peaks[f"run {key}"] = peak
            evaluate, diff, members, changes = run_times(url, key)
            result["definitions"][key] = {"members": members, "full": {"ours_ms": evaluate + diff, "evaluate_ms": evaluate,
                                                                       "diff_ms": diff, "floor_ms": floor_ms}}
        confirm_sink(url)
        if full_report:
            log("   delivery of all_customers to the sandbox")
            stdout, seconds, peak = engage(url, ["deliver", "--destination", "vero", "--max-wait", "0"])
            peaks["deliver"] = peak
            delivered = int(re.search(r"delivered (\d+)", stdout).group(1))
            requests_per_s = float(re.search(r"\(([0-9.]+)/s\)", stdout).group(1))
            floor = wrk(port, CONCURRENCY)
            evaluate, diff, members, _ = run_times(url, "all_customers")
            result["delivery"] = {"rows": delivered, "ours_per_s": requests_per_s, "floor_per_s": floor,
                                  "end_to_end_s": (evaluate + diff) / 1000 + seconds}
            log("   1% churn, incremental runs")
            churn(url, profiles)
            for key in KEYS:
                if key == "all_customers":
                    continue
                floor_ms, tables[key] = floor_query(url, key, previous_table=tables[key])
                engage(url, ["run", "--key", key, "--no-deliver"])
                evaluate, diff, members, changes = run_times(url, key)
                result["definitions"][key]["incremental"] = {"ours_ms": evaluate + diff, "evaluate_ms": evaluate,
                                                             "diff_ms": diff, "floor_ms": floor_ms, "changes": changes}
            log("   ingest")
            result["ingest"] = ingest_bench(url, work, min(1_000_000, profiles * per_profile // 10 or 1000))
            peaks["ingest"] = result["ingest"]["peak_kb"]
            _, _, peaks["status"] = engage(url, ["status"])
        result["peak_kb"] = peaks
    finally:
        box.send_signal(signal.SIGINT)
        box.wait(timeout=30)
    psql(admin, f"DROP DATABASE IF EXISTS {name};")
    return result


def ratio(a, b):
    return a / b if b else float("inf")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events-per-profile", type=int, default=10)
    parser.add_argument("--sizes", default=None, help="comma-separated profile counts for the growth table")
    args = parser.parse_args()
    largest = args.profiles
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        ([s for s in (100_000, 300_000) if s < largest] + [largest])
    results = {"machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
               "sizes": {}}
    for size in sizes:
        log(f"== {size:,} profiles")
        results["sizes"][str(size)] = bench_size(size, args.events_per_profile, args.work, full_report=(size == largest))
    top = results["sizes"][str(largest)]

    rows = []
    for key, d in top["definitions"].items():
        rows.append((f"full sync: evaluate + diff + outbox, {key} ({d['members']:,} members)",
                     d["full"]["ours_ms"] / 1000, d["full"]["floor_ms"] / 1000, "s", 1.5))
        if "incremental" in d:
            i = d["incremental"]
            rows.append((f"incremental 1% churn: {key} ({i['changes']:,} changes)", i["ours_ms"] / 1000, i["floor_ms"] / 1000, "s", 1.5))
    if "delivery" in top:
        d = top["delivery"]
        rows.append((f"delivery to the sandbox, requests/s ({d['rows']:,} rows)", d["ours_per_s"], d["floor_per_s"], "req/s", 0.7))
    if "ingest" in top:
        g = top["ingest"]
        rows.append((f"ingest events/s ({g['events']:,} events, {g['file_bytes'] / 2**20:.0f} MiB)", g["ours_per_s"], g["floor_per_s"], "ev/s", 0.5))
        rows.append(("  the same vs COPY into a table shaped like engage.events (keys, indexes, FK)", g["ours_per_s"],
                     g["shaped_floor_per_s"], "ev/s", 0.5))
    print(f"\nengage-sync benchmarks — {largest:,} profiles × {args.events_per_profile} events — {results['machine']}\n")
    print(f"{'figure':<78} {'ours':>12} {'floor':>12} {'ratio':>7} {'target':>8}")
    for name, ours, floor, unit, target in rows:
        r = ratio(ours, floor)
        target_text = f"≤{target}×" if unit == "s" else f"≥{target:.0%}"
        ok = r <= target if unit == "s" else r >= target
        print(f"{name:<78} {ours:>10.2f}{unit[0]:>2} {floor:>10.2f}{unit[0]:>2} {r:>6.2f}× {target_text:>7}{'' if ok else ' MISS'}")
    if "delivery" in top:
        e2e = top["delivery"]["end_to_end_s"]
        print(f"{'end-to-end full sync of all_customers to the sandbox':<78} {e2e:>10.1f} s {'180.00':>10} s {e2e / 180:>6.2f}× {'<3 min':>7}{'' if e2e < 180 else ' MISS'}")
    print("\npeak memory (VmHWM):")
    for command, kb in top["peak_kb"].items():
        print(f"  {command:<40} {kb / 1024:8.1f} MB{'' if kb < 150 * 1024 else '  MISS (target < 150 MB)'}")
    if len(sizes) > 1:
        print("\ngrowth (full sync of order_completed_last_30days, evaluate + diff + outbox):")
        def full(size):
            return results["sizes"][str(size)]["definitions"]["order_completed_last_30days"]["full"]
        base = full(sizes[0])
        for size in sizes:
            ms = full(size)["ours_ms"]
            growth = ms / base["ours_ms"]
            print(f"  {size:>10,} profiles {ms / 1000:8.2f} s   ×{growth:5.2f} vs {sizes[0]:,} (linear: ×{size / sizes[0]:.1f}; "
                  f"the floor: ×{full(size)['floor_ms'] / base['floor_ms']:5.2f}){' MISS' if growth > 1.1 * size / sizes[0] else ''}")
    with open("bench-results.json", "w") as f:
        json.dump(results, f, indent=2)
    print("\nwrote bench-results.json")


if __name__ == "__main__":
    main()
