#!/usr/bin/env python3
"""Runs the benchmark scenarios of docs/performance.md and prints each figure beside its floor.

Driven by Scripts/bench.sh, which builds the release binary and starts a private PostgreSQL
(DATABASE_URL). Everything here talks to that server with psql and runs the real binary.
"""
import argparse, json, os, random, re, shutil, signal, subprocess, sys, tempfile, time, urllib.parse

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
# The full syncs held to 1.5× their floor, in time and WAL, at every size.
FULL_SYNC_KEYS = ["all_customers", "order_completed_last_30days"]
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


def copy_database(source, target):
    """CREATE DATABASE target as a copy of source, checked first against the free disk: the 3M
    growth run once failed two hours in, copying the cycle's database (about 34 GB, beside its
    template, on a disk with 76 GB free at the start), with PostgreSQL's "buffer is pinned in
    InvalidateBuffer" and nothing to say why. FILE_COPY copies the files after a checkpoint,
    where the default (WAL_LOG) also writes the whole database to the WAL."""
    out, _ = psql(BASE_URL, f"SELECT pg_database_size('{source}') || ' ' || current_setting('data_directory')")
    size, data_directory = out.strip().split(" ", 1)
    free = shutil.disk_usage(data_directory).free
    if int(size) * 1.2 > free:
        raise RuntimeError(f"copying database {source} ({int(size) / 2**30:.1f} GiB) to {target} needs "
                           f"{int(size) * 1.2 / 2**30:.1f} GiB free; {free / 2**30:.1f} GiB are")
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {target}; CREATE DATABASE {target} TEMPLATE {source} STRATEGY FILE_COPY;")


def engage(url, args, stdin=None, check=True, now=None, binary=None, env=None):
    """Runs the binary under /usr/bin/time (at the instant `now`, ENGAGE_SYNC_NOW, when given);
    returns (stdout, seconds, peak KB)."""
    started = time.monotonic()
    environment = dict(os.environ, BENCH_TOKEN=TOKEN, **(env or {}))
    if now:
        environment["ENGAGE_SYNC_NOW"] = now
    out = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB=%M", binary or BIN] + args + ["--database-url", url],
                         capture_output=True, text=True, input=stdin, env=environment)
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


def churn(url, profiles, at):
    """1% of profiles change: half lose their recent events, half get new ones (half an hour
    before the instant `at`)."""
    n = max(1, profiles // 200)
    psql(url, f"""
        SELECT setseed(0.7);
        UPDATE engage.events SET occurred_at = occurred_at - interval '120 days'
        WHERE profile_id IN (SELECT 'p' || (1 + floor(random() * {profiles}))::int FROM generate_series(1, {n}));
        INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
        SELECT 'churn-' || g || '-' || k, 'p' || (1 + floor(random() * {profiles}))::int, k,
               jsonb_build_object('total', 199, 'product', 'sku-new'), '{at}'::timestamptz - interval '30 minutes'
        FROM generate_series(1, {n}) g, unnest(ARRAY['Order Completed', 'Product Viewed', 'Email Opened']) k;
        ANALYZE engage.events;
    """)


def confirm_sink(url):
    """The "sink" destination is never sent to (delivering every definition would only measure
    delivery again): its rows are marked delivered and the ledger filled as a 2xx would, so the
    incremental runs that follow diff against a confirmed ledger. A full sync's members wait in
    a backlog (delivery enqueues them as it sends): they are confirmed straight from it."""
    psql(url, """
        WITH b AS (DELETE FROM engage.backlogs b USING engage.destinations dst
                   WHERE dst.id = b.destination_id AND dst.name = 'sink' RETURNING b.*)
        INSERT INTO engage.ledger (destination_id, computation_id, vero_id, profile_id, email, value, confirmed_at, outbox_id)
        SELECT b.destination_id, b.computation_id, p.user_id, m.profile_id, p.email, m.value, now(), 0
        FROM b JOIN engage.memberships m ON m.computation_id = b.computation_id
        JOIN engage.profiles p ON p.profile_id = m.profile_id
        WHERE p.user_id IS NOT NULL
        ON CONFLICT (destination_id, computation_id, vero_id) DO UPDATE
            SET value = EXCLUDED.value, profile_id = EXCLUDED.profile_id, email = EXCLUDED.email,
                confirmed_at = EXCLUDED.confirmed_at, outbox_id = EXCLUDED.outbox_id;
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


def fresh_database(name, profiles, per_profile):
    """A new migrated database with the generated data; returns its URL, migrate's peak memory, and
    one instant for the full syncs and one an hour later for the incremental runs, so windows move
    by exactly that (ENGAGE_SYNC_NOW)."""
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
    url = db_url(name)
    _, _, peak = engage(url, ["migrate"])
    generate(url, profiles, per_profile)
    t0 = iso(time.time())
    return url, peak, t0, iso(parse_iso(t0) + 3600)


def add_destinations(url, port):
    """"vero", the sandbox on `port`, and "sink", never sent to (confirm_sink)."""
    engage(url, ["destination", "add", "vero", "--base-url", f"http://127.0.0.1:{port}", "--token-env", "BENCH_TOKEN",
                 "--rate", "100000", "--concurrency", str(CONCURRENCY)])
    engage(url, ["destination", "add", "sink", "--base-url", "http://127.0.0.1:9", "--token-env", "BENCH_TOKEN"])


def define(url, work, definitions, filename):
    """Stores `definitions` with `engage-sync define`, from a file of the work folder."""
    path = os.path.join(work, filename)
    with open(path, "w") as f:
        json.dump(definitions, f)
    engage(url, ["define", path])


def full_sync(url, key, t0):
    """The full sync of `key` beside its floor (floor_full), time and WAL. "ours" is the whole
    command as cron runs it (process start, connection, schedule, run bookkeeping, evaluation,
    diff, commit); evaluate and diff are its parts. Returns (figures, peak KB)."""
    floor_ms, floor_wal = floor_full(url, key, t0)
    lsn = wal_lsn(url)
    _, seconds, peak = engage(url, ["run", "--key", key, "--no-deliver"], now=t0)
    wal = wal_since(url, lsn)
    evaluate, diff, members, _, _, _ = run_times(url, key)
    return {"members": members, "full": {
        "ours_ms": seconds * 1000, "evaluate_ms": evaluate, "diff_ms": diff, "floor_ms": floor_ms,
        "wal_bytes": wal, "floor_wal_bytes": floor_wal}}, peak


def incremental_run(url, key, t1):
    """The incremental run of `key` at `t1` (evaluate + diff) beside the query alone over every
    profile (floor_query_alone). Returns (figures, peak KB)."""
    floor_ms = floor_query_alone(url, key, t1)
    _, seconds, peak = engage(url, ["run", "--key", key, "--no-deliver"], now=t1)
    evaluate, diff, _, changes, evaluation, affected = run_times(url, key)
    return {"ours_ms": evaluate + diff, "evaluate_ms": evaluate, "diff_ms": diff, "command_ms": seconds * 1000,
            "floor_ms": floor_ms, "changes": changes, "evaluation": evaluation, "affected": affected}, peak


def run_times(url, key):
    out, _ = psql(url, f"""
        SELECT r.evaluate_ms, r.diff_ms, r.members, r.entered + r.exited + r.changed, coalesce(r.evaluation, ''),
               coalesce(r.affected, 0)
        FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
        WHERE c.key = '{key}' ORDER BY r.id DESC LIMIT 1""")
    evaluate, diff, members, changes, evaluation, affected = out.strip().split("|")
    return float(evaluate), float(diff), int(members), int(changes), evaluation, int(affected)


def wal_lsn(url):
    out, _ = psql(url, "SELECT pg_current_wal_insert_lsn()")
    return out.strip()


def wal_since(url, lsn):
    """Bytes of WAL written since `lsn` (by everything on the server: the benchmark runs alone)."""
    out, _ = psql(url, f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{lsn}')::bigint")
    return int(out.strip())


def compiled(url, key, now):
    """The compiled query of `key` at `now` as (PREPARE statement, EXECUTE arguments)."""
    script, _, _ = engage(url, ["preview", key, "--sql", "--as-of", now])
    prepare, execute = script.rsplit("EXECUTE engage_preview", 1)
    return prepare, "engage_preview" + execute.strip().rstrip(";")


def floor_full(url, key, now):
    """The full-sync floor: the compiled query's rows into a (profile_id, value)
    table with a primary key. Returns (ms, WAL bytes)."""
    prepare, execute = compiled(url, key, now)
    psql(url, f"DROP TABLE IF EXISTS floor_{key}; CREATE TABLE floor_{key} (profile_id text PRIMARY KEY, value jsonb)")
    lsn = wal_lsn(url)
    _, times = psql(url, f"""
        INSERT INTO floor_{key} SELECT profile_id, to_jsonb(value) FROM ({execute_as_select(prepare, execute)}) x;
    """, timing=True)
    wal = wal_since(url, lsn)
    psql(url, f"DROP TABLE floor_{key}")
    return times[-1], wal


def execute_as_select(prepare, execute):
    """The prepared statement's SQL with its arguments in place of $n, as a subquery."""
    body = prepare.split(" AS\n", 1)[1].strip().rstrip(";")
    args = re.findall(r"'(?:[^']|'')*'|NULL", execute[execute.index("(") + 1:execute.rindex(")")])
    types = re.search(r"PREPARE engage_preview\((.*?)\) AS", prepare, re.S).group(1).split(", ") if args else []
    for i in range(len(args), 0, -1):
        body = re.sub(rf"\${i}(?!\d)", f"({args[i - 1]}::{types[i - 1]})", body)
    return body


def floor_query_alone(url, key, now):
    """The compiled query alone over every profile (CREATE TEMP TABLE AS EXECUTE): the floor an
    incremental run is held to (at most 0.2× of it). Returns ms."""
    prepare, execute = compiled(url, key, now)
    _, times = psql(url, f"""
        {prepare}
        CREATE TEMP TABLE q AS EXECUTE {execute};
    """, timing=True)
    return times[-1]


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


def ingest_bench(work, events):
    """ingest of an NDJSON file into a fresh database, vs COPY of the same rows from CSV, and vs
    the same ingest with the change-capture triggers disabled (at least 90%)."""
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

    def fresh(name, triggers):
        psql(BASE_URL, f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
        url = db_url(name)
        engage(url, ["migrate"])
        if not triggers:
            psql(url, "ALTER TABLE engage.events DISABLE TRIGGER USER; ALTER TABLE engage.profiles DISABLE TRIGGER USER;")
        return url

    # Each ingest twice, alternating, and the faster of each kept: measured once each, in a
    # fixed order right after the other benchmarks, the ratio was 0.81x in one run and
    # 0.92-0.96x when run alone on the same machine.
    ours_s, untriggered_s = [], []
    for attempt in range(2):
        url = fresh("bench_ingest", True)
        stdout, seconds, peak = engage(url, ["ingest", path])
        ours_s.append(seconds)
        logged, _ = psql(url, "SELECT count(*) FROM engage.profile_changes")
        if attempt == 0:
            psql(BASE_URL, "DROP DATABASE bench_ingest")
        untriggered = fresh("bench_ingest_untriggered", False)
        _, seconds_untriggered, _ = engage(untriggered, ["ingest", path])
        untriggered_s.append(seconds_untriggered)
        psql(BASE_URL, "DROP DATABASE bench_ingest_untriggered")
    ours = events / min(ours_s)
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
    psql(BASE_URL, "DROP DATABASE bench_ingest")
    return {"events": events, "file_bytes": size, "ours_per_s": ours, "floor_per_s": floor, "shaped_floor_per_s": shaped,
            "untriggered_per_s": events / min(untriggered_s), "log_rows": int(logged.strip()),
            "peak_kb": peak, "output": stdout.strip()}


def cycle_definitions():
    """50 definitions mixing every construct: windows (within, between), counts (at least, at
    most 0, exactly), property and trait filters, not/any/all, audience references, and traits
    of every aggregate, with and without windows."""
    events = ["Order Completed", "Product Viewed", "Email Opened", "Signed Up"]
    windows = ["7d", "14d", "30d", "60d", "90d"]
    defs = []
    def add(kind, body):
        d = {"name": f"Cycle {len(defs):02d}", "key": f"cycle_{len(defs):02d}", "type": kind, "destinations": ["sink"]}
        d.update(body)
        defs.append(d)
    for i in range(10):
        add("audience", {"condition": {"event": events[i % 4], "within": windows[i % 5]}})
    for i in range(5):
        add("audience", {"condition": {"event": events[i % 3], "between": [windows[(i % 4) + 1], windows[i % 4]]}})
    for i in range(5):
        add("audience", {"condition": {"event": events[i % 4], "within": windows[(i + 2) % 5], "count": {"at_least": 2 + i % 2}}})
    for i in range(3):
        add("audience", {"condition": {"event": events[i], "within": windows[4 - i], "count": {"at_most": 0}}})
    add("audience", {"condition": {"event": "Email Opened", "within": "30d", "count": {"exactly": 1}}})
    for i in range(4):
        add("audience", {"condition": {"event": "Order Completed", "within": windows[i + 1],
                                       "where": [{"property": "total", "gt": 50 + 40 * i}]}})
    add("audience", {"condition": {"trait": "plan", "equals": "pro"}})
    add("audience", {"condition": {"trait": "country", "one_of": ["US", "FR"]}})
    add("audience", {"condition": {"all": [{"event": "Product Viewed", "within": "7d"},
                                           {"not": {"event": "Order Completed", "within": "14d"}}]}})
    add("audience", {"condition": {"any": [{"event": "Signed Up", "within": "7d"},
                                           {"all": [{"trait": "plan", "equals": "enterprise"},
                                                    {"event": "Order Completed", "within": "30d"}]}]}})
    add("audience", {"condition": {"all": [{"audience": "cycle_00"}, {"trait": "plan", "equals": "pro"}]}})
    add("audience", {"condition": {"all": [{"audience": "cycle_02"}, {"not": {"audience": "cycle_05"}}]}})
    while len(defs) < 40:
        i = len(defs)
        add("audience", {"condition": {"event": events[i % 4], "within": windows[i % 5],
                                       "where": [{"property": "product", "starts_with": f"sku-{i % 5}"}]}})
    aggregates = ["count", "sum", "avg", "min", "max", "first", "last", "most_frequent", "unique_list", "unique_list_count"]
    for i, a in enumerate(aggregates):
        value = {"aggregate": a, "event": "Order Completed" if a in ("sum", "avg", "min", "max") else events[i % 2]}
        if a != "count":
            value["property"] = "total" if a in ("sum", "avg", "min", "max") else "product"
        if i % 2 == 0:
            value["within"] = windows[i % 5]
        add("trait", {"value": value})
    return defs


def cycle_bench(template, profiles, t0, work, baseline_bin=None):
    """The cron cycle: 50 definitions synced in full at t0 (the ledger confirmed); then 1% churn and
    one hour passed, and the whole `run` cron would start then is timed. "before" is the same
    cycle, from a copy of the same state, by the baseline binary when given (the engine before
    incremental evaluation, which evaluated every profile on every run), else by run --full.
    The template becomes the cycle's database (renamed, not copied: at 3M a copy is 10 GB)."""
    t1 = iso(parse_iso(t0) + 3660)
    psql(BASE_URL, f"DROP DATABASE IF EXISTS bench_cycle; ALTER DATABASE {template} RENAME TO bench_cycle;")
    url = db_url("bench_cycle")
    define(url, work, cycle_definitions(), "cycle.json")
    log("   cycle: full sync of 50 definitions")
    _, first_full, _ = engage(url, ["run", "--no-deliver", "--destination", "sink"], now=t0)
    # That run analyzed the snapshot it filled (SnapshotStatistics): the cycle's incremental
    # runs are planned with statistics that know all 50 definitions.
    confirm_sink(url)
    churn(url, profiles, t1)
    copy_database("bench_cycle", "bench_cycle_before")
    results = {"first_full_seconds": first_full}
    # An hour and a minute later every pair is due; --all says so explicitly, and the count of
    # runs below checks it.
    for label, name, args, binary in [
            ("after", "bench_cycle", ["run", "--no-deliver", "--all"], None),
            ("before", "bench_cycle_before", ["run", "--no-deliver", "--all"] + ([] if baseline_bin else ["--full"]), baseline_bin)]:
        log(f"   cycle ({label}): 1% churn, one hour later")
        target = db_url(name)
        out, seconds, peak = engage(target, args + ["--destination", "sink"], now=t1, binary=binary)
        runs, _ = psql(target, f"SELECT count(*) FROM engage.sync_runs WHERE started_at > now() - make_interval(secs => {seconds + 5})")
        results[label] = {"seconds": seconds, "runs": int(runs.strip()), "peak_kb": peak}
        if results[label]["runs"] < 50:
            raise RuntimeError(f"cycle ({label}): {runs.strip()} runs instead of 50: {out[-1000:]}")
    results["disk"] = disk(url)
    psql(BASE_URL, "DROP DATABASE bench_cycle; DROP DATABASE bench_cycle_before;")
    return results


def etl_bench(url, name, at):
    """After an ETL that touches every profile (`UPDATE engage.profiles SET traits = traits || …`),
    the next `run` of every definition beside `run --full`, at the same instant. Each runs twice,
    on copies of the same database made before any of them (ours, full, full, ours), and the
    faster of each is kept: measured once each, one after the other, a 40 s pair of runs differed
    by 14% either way. Target: at most 1.1× (an incremental run never costs more than a full one)."""
    psql(url, """UPDATE engage.profiles SET traits = traits || '{"n": 1}'; VACUUM ANALYZE engage.profiles;""")
    copies = [f"{name}_etl_{i}" for i in range(4)]
    for copy in copies:
        copy_database(name, copy)
    times = {"ours": [], "full": []}
    for copy, label in zip(copies, ["ours", "full", "full", "ours"]):
        out, seconds, _ = engage(db_url(copy), ["run", "--all", "--no-deliver"] + (["--full"] if label == "full" else []), now=at)
        times[label].append(seconds)
        if label == "ours":
            reasons, _ = psql(db_url(copy), "SELECT count(*) FILTER (WHERE full_because LIKE '%costs less') || '/' || count(*) "
                                            f"FROM engage.sync_runs WHERE instant = '{at}'::timestamptz")
            output = out.strip()
        psql(BASE_URL, f"DROP DATABASE {copy}")
    return {"ours_ms": min(times["ours"]) * 1000, "floor_ms": min(times["full"]) * 1000, "runs_s": times,
            "chosen_full": reasons.strip(), "output": output}


def parse_iso(text):
    return time.mktime(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


def iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


SQL_AUDIENCE = {"name": "SQL Accounts", "key": "sql_accounts", "type": "audience", "destinations": ["sink"],
                "sql": "SELECT account_id AS user_id FROM bench_app.accounts WHERE status = 'active'"}


def sql_bench(url, profiles, t0, work):
    """A SQL audience over a table of the user's own with a row per profile, all
    active: its full sync (evaluation + diff) beside the floor, the query alone into a table
    with a primary key. Returns the figures."""
    psql(url, f"""
        CREATE SCHEMA bench_app;
        CREATE TABLE bench_app.accounts AS
        SELECT 'u' || i AS account_id, 'active'::text AS status FROM generate_series(1, {profiles}) i;
        VACUUM ANALYZE bench_app.accounts;
    """)
    define(url, work, SQL_AUDIENCE, "sql-definition.json")
    psql(url, "CREATE TABLE bench_sql_floor (user_id text PRIMARY KEY)")
    _, times = psql(url, f"INSERT INTO bench_sql_floor SELECT user_id FROM ({SQL_AUDIENCE['sql']}) q;", timing=True)
    psql(url, "DROP TABLE bench_sql_floor")
    _, seconds, _ = engage(url, ["run", "--key", "sql_accounts", "--no-deliver"], now=t0)
    evaluate, diff, members, _, _, _ = run_times(url, "sql_accounts")
    return {"members": members, "ours_ms": evaluate + diff, "command_ms": seconds * 1000, "evaluate_ms": evaluate,
            "diff_ms": diff, "floor_ms": times[-1]}


PAGE_RUNS = 1000
PAGE_ROWS_PER_RUN = 1000


def status_page_bench(work):
    """The status page of a definition with 1,000 runs, each run with 1,000 outbox rows
    (1% failed or rejected): the median time of GET /definitions/KEY from `serve`, beside the
    median time of the same queries (those of StatusPageStore) in psql."""
    name = "bench_page"
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
    url = db_url(name)
    engage(url, ["migrate"])
    engage(url, ["destination", "add", "sink", "--base-url", "http://127.0.0.1:9", "--token-env", "BENCH_TOKEN"])
    define(url, work, {"name": "Page Audience", "key": "page_audience", "type": "audience",
                       "condition": {"trait": "plan", "equals": "pro"}}, "page-definition.json")
    # Runs an hour apart up to now (so none is due), sizes that wander; their rows, all answered.
    psql(url, f"""
        INSERT INTO engage.sync_runs (computation_id, destination_id, mode, status, evaluation, members, entered, exited,
                                      started_at, finished_at, instant, evaluate_ms, diff_ms, deliver_ms)
        SELECT c.id, d.id, CASE WHEN i = 1 THEN 'full' ELSE 'incremental' END, 'succeeded',
               CASE WHEN i = 1 THEN 'full' ELSE 'incremental' END,
               100000 + (i * 37 % 5000), {PAGE_ROWS_PER_RUN} / 2, {PAGE_ROWS_PER_RUN} / 2,
               now() - ({PAGE_RUNS} - i) * interval '1 hour', now() - ({PAGE_RUNS} - i) * interval '1 hour' + interval '2 s',
               now() - ({PAGE_RUNS} - i) * interval '1 hour', 800, 400, 900
        FROM engage.computations c, engage.destinations d, generate_series(1, {PAGE_RUNS}) i;
        INSERT INTO engage.outbox (run_id, destination_id, computation_id, profile_id, vero_id, op, value, message, status,
                                   attempts, last_status_code, last_error, created_at, delivered_at)
        SELECT r.id, r.destination_id, r.computation_id, 'p' || j, 'u' || j, CASE WHEN j % 2 = 0 THEN 'enter' ELSE 'exit' END,
               to_jsonb(j % 2 = 0), '{{}}'::jsonb,
               CASE WHEN j % 100 = 0 THEN 'failed' WHEN j % 100 = 1 THEN 'rejected' ELSE 'delivered' END, 1,
               CASE WHEN j % 100 = 0 THEN 500 WHEN j % 100 = 1 THEN 400 ELSE 200 END,
               CASE WHEN j % 100 = 0 THEN 'HTTP 500 after 10 attempts' WHEN j % 100 = 1 THEN 'HTTP 400: email is malformed' END,
               r.started_at, CASE WHEN j % 100 > 1 THEN r.started_at + j * interval '1 ms' END
        FROM engage.sync_runs r, generate_series(1, {PAGE_ROWS_PER_RUN}) j;
        VACUUM ANALYZE engage.sync_runs; VACUUM ANALYZE engage.outbox;
    """)
    # The same queries as StatusPageStore, in one psql session.
    queries = """
        SELECT c.key, c.name, c.type, c.enabled, jsonb_pretty(c.definition) AS definition, c.definition ->> 'sql' AS sql,
               c.sync_every::text AS sync_every,
               coalesce((SELECT e.members FROM engage.evaluations e WHERE e.computation_id = c.id), 0)::int AS members
        FROM engage.computations c WHERE c.key = 'page_audience' AND c.removed_at IS NULL;
        SELECT run_id, destination, mode, status, evaluation, members, entered, exited, changed, skipped,
               to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS started,
               extract(epoch FROM started_at)::float8 AS epoch, seconds, evaluate_ms, diff_ms, deliver_ms, error
        FROM engage.definition_runs('page_audience', 1000::int);
        SELECT run_id, destination, user_id, op, value::text AS value, status, reason,
               to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created
        FROM engage.definition_changes('page_audience', 20::int);
        SELECT destination, status, reason, status_code, rows::int AS rows, coalesce(examples, '{}') AS examples,
               to_char(last_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS last_at
        FROM engage.definition_failures('page_audience');
    """
    floors = []
    for _ in range(7):
        _, times = psql(url, queries, timing=True)
        floors.append(sum(times))
    proc = subprocess.Popen([BIN, "serve", "--port", "0", "--tick", "3600", "--database-url", url], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, BENCH_TOKEN=TOKEN))
    try:
        port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
        page = f"http://127.0.0.1:{port}/definitions/page_audience"
        import urllib.request
        html = urllib.request.urlopen(page, timeout=60).read()
        assert html.count(b"<circle ") == PAGE_RUNS, "the chart has a point per run"
        times = []
        for _ in range(21):
            started = time.monotonic()
            urllib.request.urlopen(page, timeout=60).read()
            times.append((time.monotonic() - started) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {name};")
    return {"runs": PAGE_RUNS, "outbox_rows": PAGE_RUNS * PAGE_ROWS_PER_RUN, "page_bytes": len(html),
            "ours_ms": sorted(times)[len(times) // 2], "floor_ms": sorted(floors)[len(floors) // 2]}


def print_status_page(p):
    ok = p["ours_ms"] < 200
    label = f"status page of a definition with {p['runs']:,} runs ({p['outbox_rows']:,} outbox rows; floor: its queries in psql)"
    print(f"{label:<92} {p['ours_ms']:>10.1f}ms {p['floor_ms']:>10.1f}ms {ratio(p['ours_ms'], p['floor_ms']):>6.2f}× {'<200 ms':>7}"
          f"{'' if ok else ' MISS'}")


def bench_size(profiles, per_profile, work, full_report, cycle=False, baseline_bin=None):
    name = f"bench_{profiles}"
    admin = BASE_URL
    url, peak, t0, t1 = fresh_database(name, profiles, per_profile)
    result = {"profiles": profiles, "events": profiles * per_profile, "definitions": {}}
    box, port = sandbox(None)
    try:
        add_destinations(url, port)
        if cycle:
            # The cycle's databases start from this one as it is now: data, no definitions.
            copy_database(name, "bench_cycle_template")
        define(url, work, DEFINITIONS, "definitions.json")
        peaks = {"migrate": peak}
        log(f"   full syncs ({profiles:,} profiles)")
        for key in KEYS:
            result["definitions"][key], peaks[f"run {key}"] = full_sync(url, key, t0)
        confirm_sink(url)
        if full_report:
            log("   delivery of all_customers to the sandbox")
            lsn = wal_lsn(url)
            stdout, seconds, peak = engage(url, ["deliver", "--destination", "vero", "--max-wait", "0"])
            delivery_wal = wal_since(url, lsn)
            # The least a delivery writes: one ledger row per confirmed change (the same rows, into
            # a table shaped like the ledger, with its keys).
            psql(url, "CREATE TABLE bench_ledger_floor (LIKE engage.ledger INCLUDING ALL)")
            lsn = wal_lsn(url)
            psql(url, """INSERT INTO bench_ledger_floor SELECT l.* FROM engage.ledger l
                         JOIN engage.destinations d ON d.id = l.destination_id WHERE d.name = 'vero'""")
            ledger_floor_wal = wal_since(url, lsn)
            psql(url, "DROP TABLE bench_ledger_floor")
            peaks["deliver"] = peak
            delivered = int(re.search(r"delivered (\d+)", stdout).group(1))
            requests_per_s = float(re.search(r"\(([0-9.]+)/s\)", stdout).group(1))
            floor = wrk(port, CONCURRENCY)
            evaluate, diff, members, _, _, _ = run_times(url, "all_customers")
            result["delivery"] = {"rows": delivered, "ours_per_s": requests_per_s, "floor_per_s": floor,
                                  "end_to_end_s": (evaluate + diff) / 1000 + seconds,
                                  "wal_bytes": delivery_wal, "floor_wal_bytes": ledger_floor_wal}
            log("   1% churn and one hour later: incremental runs")
            churn(url, profiles, t1)
            for key in KEYS:
                if key == "all_customers":
                    continue
                result["definitions"][key]["incremental"], _ = incremental_run(url, key, t1)
            log("   a SQL audience over the user's own table")
            result["sql"] = sql_bench(url, profiles, t1, work)
            log("   ingest")
            result["ingest"] = ingest_bench(work, min(1_000_000, profiles * per_profile // 10 or 1000))
            peaks["ingest"] = result["ingest"]["peak_kb"]
            _, _, peaks["status"] = engage(url, ["status"])
        log("   an ETL rewrites every profile's traits: the next run beside run --full")
        result["etl"] = etl_bench(url, name, iso(parse_iso(t1) + 3600))
        result["peak_kb"] = peaks
    finally:
        box.send_signal(signal.SIGINT)
        box.wait(timeout=30)
    psql(admin, f"DROP DATABASE IF EXISTS {name};")
    if cycle:
        result["cycle"] = cycle_bench("bench_cycle_template", profiles, t0, work, baseline_bin)
    return result


OLD_STATUS_VIEW = """
SELECT c.key, d.name AS destination, c.type, c.enabled,
       (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members,
       (SELECT count(*) FROM engage.ledger l
        WHERE l.computation_id = c.id AND l.destination_id = d.id
          AND l.value <> 'false'::jsonb AND l.value <> 'null'::jsonb) AS delivered_true,
       (SELECT count(*) FROM engage.outbox o
        WHERE o.computation_id = c.id AND o.destination_id = d.id AND o.status = 'pending')
       + (SELECT count(*) FROM engage.sync_changelog ch
          WHERE ch.outbox_id IS NULL AND ch.status = 'pending' AND ch.key = c.key AND ch.destination = d.name) AS pending,
       (SELECT count(*) FROM engage.outbox o
        WHERE o.computation_id = c.id AND o.destination_id = d.id AND o.status = 'failed') AS failed,
       last_run.started_at AS last_run_at, last_run.status AS last_run_status,
       CASE WHEN c.enabled THEN coalesce(last_ok.instant + c.sync_every, now()) END AS next_due,
       d.paused_at AS destination_paused_at
FROM engage.computations c
CROSS JOIN engage.destinations d
LEFT JOIN LATERAL (SELECT r.started_at, r.status FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                   ORDER BY r.started_at DESC, r.id DESC LIMIT 1) last_run ON true
LEFT JOIN LATERAL (SELECT max(coalesce(r.instant, r.started_at)) AS instant FROM engage.sync_runs r
                   WHERE r.computation_id = c.id AND r.destination_id = d.id
                     AND r.status IN ('succeeded', 'partial')) last_ok ON true
WHERE c.removed_at IS NULL AND d.enabled AND (c.destinations IS NULL OR d.name = ANY (c.destinations));
"""

# The reads before kept figures (main at d723858): `status` (engage.sync_status as it counted,
# and the skipped rows) and `metrics` (the destination gauges), as they were, for comparison.
STATUS_BEFORE = """
SELECT s.*, (SELECT count(*) FROM engage.outbox o JOIN engage.computations c ON c.id = o.computation_id
             JOIN engage.destinations d ON d.id = o.destination_id
             WHERE c.key = s.key AND d.name = s.destination AND o.status = 'skipped') AS skipped
FROM (
""" + OLD_STATUS_VIEW.rstrip().rstrip(";") + """
) s ORDER BY s.key, s.destination;
"""
METRICS_BEFORE = """
SELECT d.name,
       ((SELECT count(*) FROM engage.outbox o WHERE o.destination_id = d.id AND o.status = 'pending')
        + (SELECT count(*) FROM engage.sync_changelog ch
           WHERE ch.outbox_id IS NULL AND ch.status = 'pending' AND ch.destination = d.name)) AS pending,
       (SELECT count(*) FROM engage.outbox o WHERE o.destination_id = d.id AND o.status = 'failed') AS failed,
       (SELECT min(o.created_at) FROM engage.outbox o WHERE o.destination_id = d.id AND o.status = 'pending') AS oldest
FROM engage.destinations d ORDER BY d.name;
SELECT c.key, (SELECT count(*) FROM engage.memberships m WHERE m.computation_id = c.id) AS members
FROM engage.computations c ORDER BY c.key;
"""
# Ten audiences of every size up to every profile, for the status reads.
STATUS_SIZES = [1_000, 3_000, 10_000, 30_000, 100_000, 200_000, 300_000, 500_000, 700_000, 1_000_000]


def status_reads_bench(work, profiles):
    """`status`, `metrics`, serve's GET /metrics and GET / at `profiles` profiles with ten
    audiences of every size up to all of them, in three states: every first sync's backlog
    pending, half of each delivered, all delivered. Delivery is written by SQL as the engine
    writes it (outbox rows delivered, ledger rows, each backlog moved past them): sending 3.8M
    requests would measure the sandbox, not these reads. Beside each: the same reads as they
    were before kept figures (STATUS_BEFORE, METRICS_BEFORE) in psql, and the full count of
    engage.figure_drift, which must come back empty."""
    name = "bench_status"
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
    url = db_url(name)
    engage(url, ["migrate"])
    engage(url, ["destination", "add", "vero", "--base-url", "http://127.0.0.1:9", "--token-env", "BENCH_TOKEN"])
    log(f"   {profiles:,} profiles, ten audiences of {', '.join(f'{n:,}' for n in STATUS_SIZES)} members")
    psql(url, f"""
        INSERT INTO engage.profiles (profile_id, user_id, email, traits)
        SELECT 'p' || lpad(i::text, 8, '0'), 'u' || i, 'u' || i || '@example.com', jsonb_build_object('n', i)
        FROM generate_series(1, {profiles}) i;
        VACUUM ANALYZE engage.profiles;
    """)
    define(url, work, [{"name": f"Size {n}", "key": f"size_{n}", "type": "audience",
                        "condition": {"trait": "n", "lte": n}} for n in STATUS_SIZES if n <= profiles],
           "status-definitions.json")
    largest = max(n for n in STATUS_SIZES if n <= profiles)
    _, seconds, _ = engage(url, ["run", "--all", "--no-deliver"])
    log(f"   first syncs written in {seconds:.1f} s")
    # No run is due while serve answers (a disabled definition's backlog waits; its pair shows).
    psql(url, "UPDATE engage.computations SET enabled = false; VACUUM ANALYZE;")

    def deliver_to(fraction):
        # Each backlog's next members up to `fraction` of its definition's snapshot: delivered
        # outbox rows, their ledger rows, and the backlog past them (or gone), in one transaction.
        psql(url, f"""
            BEGIN;
            CREATE TEMP TABLE reached ON COMMIT DROP AS
            SELECT b.destination_id, b.computation_id, b.run_id, c.key, m.profile_id, p.user_id, p.email
            FROM engage.backlogs b JOIN engage.computations c ON c.id = b.computation_id
            CROSS JOIN LATERAL (SELECT m.profile_id FROM engage.memberships m
                                WHERE m.computation_id = b.computation_id AND m.profile_id > coalesce(b.after_profile, '')
                                ORDER BY m.profile_id
                                LIMIT greatest(0, (SELECT e.members FROM engage.evaluations e WHERE e.computation_id = b.computation_id)
                                                  * {fraction} - ((SELECT e.members FROM engage.evaluations e
                                                                   WHERE e.computation_id = b.computation_id) - b.remaining))::bigint) m
            JOIN engage.profiles p ON p.profile_id = m.profile_id;
            WITH sent AS (
                INSERT INTO engage.outbox (run_id, destination_id, computation_id, profile_id, vero_id, email, op, value, call,
                                           status, attempts, last_status_code, delivered_at)
                SELECT run_id, destination_id, computation_id, profile_id, user_id, email, 'enter', 'true', 'identify',
                       'delivered', 1, 200, now()
                FROM reached RETURNING id, destination_id, computation_id, profile_id, vero_id, email)
            INSERT INTO engage.ledger (destination_id, computation_id, vero_id, profile_id, email, value, confirmed_at, outbox_id)
            SELECT destination_id, computation_id, vero_id, profile_id, email, 'true', now(), id FROM sent;
            UPDATE engage.backlogs b SET after_profile = r.last, remaining = b.remaining - r.n
            FROM (SELECT destination_id, computation_id, max(profile_id) AS last, count(*) AS n FROM reached GROUP BY 1, 2) r
            WHERE b.destination_id = r.destination_id AND b.computation_id = r.computation_id;
            DELETE FROM engage.backlogs WHERE remaining = 0;
            COMMIT;
            VACUUM ANALYZE;
        """)

    proc = subprocess.Popen([BIN, "serve", "--port", "0", "--tick", "3600", "--database-url", url], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, BENCH_TOKEN=TOKEN))
    import urllib.request
    states = {}
    try:
        port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))

        def median(f, n=11):
            times = []
            for _ in range(n):
                started = time.monotonic()
                f()
                times.append((time.monotonic() - started) * 1000)
            return sorted(times)[len(times) // 2]

        def get(path):
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=600).read()

        def before(sql):
            runs = []
            for _ in range(3):
                _, times = psql(url, sql, timing=True)
                runs.append(sum(times))
            return sorted(runs)[1]

        for state, fraction in (("backlog pending", None), ("half delivered", 0.5), ("all delivered", 1.0)):
            if fraction is not None:
                log(f"   delivering to {fraction:.0%}")
                deliver_to(fraction)
            log(f"   reads: {state}")
            out, _ = psql(url, "SELECT count(*) FROM engage.figure_drift;", timing=False)
            _, count_ms = psql(url, "SELECT count(*) FROM engage.figure_drift;", timing=True)
            pending, _ = psql(url, "SELECT sum(pending) FROM engage.sync_status;")
            states[state] = {
                "drift": int(out.strip()), "pending": int(pending.strip() or 0), "full_count_ms": sum(count_ms),
                "status_ms": median(lambda: engage(url, ["status"])), "metrics_ms": median(lambda: engage(url, ["metrics"])),
                "get_metrics_ms": median(lambda: get("/metrics")), "get_overview_ms": median(lambda: get("/")),
                "get_definition_ms": median(lambda: get(f"/definitions/size_{largest}"), 5),
                "get_destination_ms": median(lambda: get("/destinations/vero"), 5),
                "status_before_ms": before(STATUS_BEFORE), "metrics_before_ms": before(METRICS_BEFORE)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {name};")
    return {"profiles": profiles, "states": states}


def print_status_reads(r):
    print(f"\nstatus reads at {r['profiles']:,} profiles, ten audiences up to every profile (target ≤100 ms each; "
          f"'before': the same reads counted, as before kept figures, in psql):")
    for state, s in r["states"].items():
        print(f"  {state} ({s['pending']:,} pending; the full count of engage.figure_drift {s['full_count_ms']:.0f} ms, "
              f"{s['drift']} figures differ{'' if s['drift'] == 0 else ' MISS'}):")
        for label, ours, was in (("engage-sync status", s["status_ms"], s["status_before_ms"]),
                                 ("engage-sync metrics", s["metrics_ms"], s["metrics_before_ms"]),
                                 ("GET /metrics", s["get_metrics_ms"], s["metrics_before_ms"]),
                                 ("GET / (the status page's overview)", s["get_overview_ms"], s["status_before_ms"])):
            print(f"    {label:<40} {ours:8.1f} ms   before {was:9.1f} ms{'' if ours <= 100 else '  MISS'}")
        print(f"    {'GET /definitions/KEY (the largest)':<40} {s['get_definition_ms']:8.1f} ms")
        print(f"    {'GET /destinations/vero':<40} {s['get_destination_ms']:8.1f} ms")


def disk(url):
    """Bytes on disk of the schema's tables and their indexes (and TOAST), largest first."""
    out, _ = psql(url, """
        SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'engage' AND c.relkind = 'r' ORDER BY 2 DESC""")
    return {name: int(size) for name, size in (line.split("|") for line in out.strip().splitlines())}


GROWTH_SIZES = [100_000, 300_000, 1_000_000, 3_000_000]
# The growth run's definitions: the every-profile audience (delivered), the 30-day audience
# and the property filter (the two incremental runs the main table holds to 0.2×).
GROWTH_KEYS = ["order_completed_last_30days", "big_spenders", "all_customers"]


def growth_size(profiles, per_profile, work, result, save):
    """One size of the growth run: full syncs, delivery of every profile, 1% churn and an hour,
    the incremental runs, the disk used, then the 50-definition cycle on the data as it was before
    any definition (a copy made first). Fills `result` and calls `save` after each part (a size
    takes up to hours)."""
    name = f"bench_growth_{profiles}"
    url, _, t0, t1 = fresh_database(name, profiles, per_profile)
    result.update({"profiles": profiles, "definitions": {}, "peak_kb": {}})

    def keep_peak(command, peak):  # the highest of the command's runs at this size
        result["peak_kb"][command] = max(peak, result["peak_kb"].get(command, 0))
    box, port = sandbox(None)
    try:
        add_destinations(url, port)
        # The cycle's database starts from this one as it is now: data and destinations, no definitions.
        copy_database(name, "bench_cycle_template")
        define(url, work, [d for d in DEFINITIONS if d["name"].lower().replace(" ", "_") in GROWTH_KEYS],
               "growth-definitions.json")
        log(f"   full syncs ({profiles:,} profiles)")
        for key in GROWTH_KEYS:
            result["definitions"][key], peak = full_sync(url, key, t0)
            keep_peak("run (full sync)", peak)
        confirm_sink(url)
        log(f"   delivery of all_customers ({profiles:,} requests) to the sandbox")
        stdout, seconds, peak = engage(url, ["deliver", "--destination", "vero", "--max-wait", "0"])
        keep_peak("deliver", peak)
        result["delivery"] = {"rows": int(re.search(r"delivered (\d+)", stdout).group(1)),
                              "ours_per_s": float(re.search(r"\(([0-9.]+)/s\)", stdout).group(1)),
                              "floor_per_s": wrk(port, CONCURRENCY), "seconds": seconds}
        log("   1% churn and one hour later: incremental runs")
        churn(url, profiles, t1)
        for key in GROWTH_KEYS[:2]:
            result["definitions"][key]["incremental"], peak = incremental_run(url, key, t1)
            keep_peak("run (incremental)", peak)
        result["disk"] = disk(url)
        save()
    finally:
        box.send_signal(signal.SIGINT)
        box.wait(timeout=30)
    psql(BASE_URL, f"DROP DATABASE IF EXISTS {name};")
    result["cycle"] = cycle_bench("bench_cycle_template", profiles, t0, work)
    keep_peak("run (50-definition cycle)", result["cycle"]["after"]["peak_kb"])
    save()


PROFILE_SETTINGS = {"session_preload_libraries": "auto_explain", "auto_explain.log_min_duration": "1000",
                    "auto_explain.log_analyze": "on", "auto_explain.log_timing": "off", "auto_explain.log_buffers": "on",
                    "auto_explain.log_format": "json", "auto_explain.log_nested_statements": "on"}


def log_plans(on):
    """Every session of the server (ours and the floors' alike) logs the plan of each statement
    over a second: auto_explain, with row counts and buffers, without per-node timing."""
    # A module's parameters are known to ALTER SYSTEM once the module is loaded.
    change = (f"ALTER SYSTEM SET {k} = '{v}';\n" if on else f"ALTER SYSTEM RESET {k};\n" for k, v in PROFILE_SETTINGS.items())
    psql(BASE_URL, "LOAD 'auto_explain';\n" + "".join(change) + "SELECT pg_reload_conf();")


def profiled_statements(server_log, since, limit=12):
    """The statements auto_explain logged (each over a second) after byte `since` of the server's
    log, longest first: duration, the statement's first words, its plan's top nodes, rows, buffers."""
    with open(server_log, errors="replace") as f:
        f.seek(since)
        text = f.read()
    found = []
    for match in re.finditer(r"duration: ([0-9.]+) ms  plan:\n((?:\t.*\n?)+)", text):
        try:
            entry = json.loads("\n".join(line[1:] for line in match.group(2).splitlines()))
        except ValueError:
            continue
        plan = entry.get("Plan", {})

        def nodes(node, depth=0):
            label = node.get("Node Type", "?") + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
            rows = node.get("Actual Rows")
            out = [("  " * depth) + label + (f" ({rows:,.0f} rows)" if rows is not None else "")]
            if depth < 3:
                for child in node.get("Plans", []):
                    out += nodes(child, depth + 1)
            return out
        query = " ".join(entry.get("Query Text", "").split())
        found.append({"ms": float(match.group(1)), "query": query[:160], "nodes": nodes(plan)[:12],
                      "shared_hit": plan.get("Shared Hit Blocks", 0), "shared_read": plan.get("Shared Read Blocks", 0),
                      "temp_written": plan.get("Temp Written Blocks", 0)})
    found.sort(key=lambda e: -e["ms"])
    return found[:limit]


def growth_bench(work, sizes, per_profile):
    results = {"machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
               "per_profile": per_profile, "sizes": {}}
    server_log = os.path.join(work, "pg", "server.log")

    # Written after every part of a size: the largest take hours, and an interrupted run keeps
    # what it measured (a size without its cycle prints without it).
    def save():
        with open("bench-growth.json", "w") as f:
            json.dump(results, f, indent=2)
    for size in sizes:
        log(f"== growth: {size:,} profiles")
        profiled = size == sizes[-1]
        since = os.path.getsize(server_log) if os.path.exists(server_log) else 0
        log_plans(profiled)
        results["sizes"][str(size)] = {}
        growth_size(size, per_profile, work, results["sizes"][str(size)], save)
        if profiled:
            log_plans(False)
            results["profile"] = profiled_statements(server_log, since)
        save()
    return results


def print_growth(results, sizes):
    first = sizes[0]
    rows = results["sizes"]

    def line(title, unit, get, floor=None):
        print(f"\n{title}")
        base = None
        for size in sizes:
            r = rows[str(size)]
            try:
                ours = get(r)
            except KeyError:  # a part this size did not reach (an interrupted run)
                print(f"  {size:>10,} profiles  not measured")
                continue
            base = base or ours
            text = f"  {size:>10,} profiles  {ours:>12,.2f} {unit}"
            if floor:
                f = floor(r)
                text += f"  floor {f:>12,.2f} {unit}  {ours / f if f else float('inf'):5.2f}×"
            text += f"   ×{ours / base:5.2f} for ×{size / first:.0f} profiles"
            print(text)

    print(f"\nengage-sync growth — {', '.join(f'{s:,}' for s in sizes)} profiles × {results.get('per_profile', 10)} events — {results['machine']}")
    for key in ("all_customers", "order_completed_last_30days"):
        line(f"full sync, the command: {key} (floor: its rows into a keyed table)", "s",
             lambda r, k=key: r["definitions"][k]["full"]["ours_ms"] / 1000, lambda r, k=key: r["definitions"][k]["full"]["floor_ms"] / 1000)
        line(f"  WAL per member of {key}", "B",
             lambda r, k=key: r["definitions"][k]["full"]["wal_bytes"] / max(1, r["definitions"][k]["members"]),
             lambda r, k=key: r["definitions"][k]["full"]["floor_wal_bytes"] / max(1, r["definitions"][k]["members"]))
    for key in ("order_completed_last_30days", "big_spenders"):
        line(f"incremental, 1% churn + 1 h: {key}, evaluate + diff (floor: the query alone over every profile)", "s",
             lambda r, k=key: r["definitions"][k]["incremental"]["ours_ms"] / 1000,
             lambda r, k=key: r["definitions"][k]["incremental"]["floor_ms"] / 1000)
    line("cron cycle of 50 definitions, 1% churn + 1 h (beside: the same cycle by run --full)", "s",
         lambda r: r["cycle"]["after"]["seconds"], lambda r: r["cycle"]["before"]["seconds"])
    line("  the cycle's first full sync of 50 definitions", "s", lambda r: r["cycle"]["first_full_seconds"])
    line("delivery to the sandbox, requests/s (floor: wrk, same endpoint, same concurrency)", "req/s",
         lambda r: r["delivery"]["ours_per_s"], lambda r: r["delivery"]["floor_per_s"])
    line("  delivery of every profile, the command's wall time", "s", lambda r: r["delivery"]["seconds"])
    for command in ("run (full sync)", "run (incremental)", "run (50-definition cycle)", "deliver"):
        line(f"peak memory (VmHWM): {command}", "MB", lambda r, c=command: r["peak_kb"][c] / 1024)
    line("disk per profile: engage's tables and indexes (3 definitions, every profile delivered)", "B",
         lambda r: sum(r["disk"].values()) / r["profiles"])
    line("disk per profile, the cycle's database (50 definitions)", "B",
         lambda r: sum(r["cycle"]["disk"].values()) / r["profiles"])
    top = rows[str(sizes[-1])]
    if "cycle" in top:
        print(f"\nat {sizes[-1]:,} profiles, the largest tables (cycle database): " + ", ".join(
            f"{name} {size / 2**20:,.0f} MiB" for name, size in list(top["cycle"]["disk"].items())[:6]))
    if results.get("profile"):
        print(f"\nwhere the time goes at {sizes[-1]:,} profiles: the statements over a second "
              "(auto_explain: ANALYZE without per-node timing, BUFFERS), longest first")
        for e in results["profile"]:
            print(f"  {e['ms'] / 1000:7.2f} s  shared hit {e['shared_hit']:,} read {e['shared_read']:,} temp written {e['temp_written']:,}  {e['query']}")
            for node in e["nodes"][:6]:
                print(f"             {node}")


def ratio(a, b):
    return a / b if b else float("inf")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events-per-profile", type=int, default=10)
    parser.add_argument("--sizes", default=None, help="comma-separated profile counts for the growth table")
    parser.add_argument("--no-cycle", action="store_true", help="skip the 50-definition cycle")
    parser.add_argument("--only", choices=["status-page", "status-reads"], default=None, help="run one benchmark alone")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out: status-page, status-reads")
    parser.add_argument("--growth", action="store_true",
                        help="the growth curves (docs/scaling.md) at --sizes (default 100000,300000,1000000,3000000)")
    parser.add_argument("--growth-print", metavar="FILE", default=None,
                        help="print the growth table of a bench-growth.json (of a run cut short, the sizes it finished)")
    parser.add_argument("--baseline-bin", default=None,
                        help="an engage-sync binary to time the cycle's 'before' with (default: run --full)")
    args = parser.parse_args()
    if args.growth_print:
        with open(args.growth_print) as f:
            results = json.load(f)
        print_growth(results, sorted(int(s) for s in results["sizes"]))
        return
    if args.growth:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else GROWTH_SIZES
        results = growth_bench(args.work, sizes, args.events_per_profile)
        print_growth(results, sizes)
        print("\nwrote bench-growth.json")
        return
    if args.only == "status-page":
        log("== the status page")
        print_status_page(status_page_bench(args.work))
        return
    if args.only == "status-reads":
        log("== status reads")
        print_status_reads(status_reads_bench(args.work, args.profiles))
        return
    largest = args.profiles
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        ([s for s in (200_000,) if s < largest] + [largest])
    results = {"machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
               "sizes": {}}
    for size in sizes:
        log(f"== {size:,} profiles")
        top_size = size == largest
        results["sizes"][str(size)] = bench_size(size, args.events_per_profile, args.work, full_report=top_size,
                                                 cycle=top_size and not args.no_cycle, baseline_bin=args.baseline_bin)
    top = results["sizes"][str(largest)]
    skipped = set(filter(None, args.skip.split(",")))
    if "status-page" not in skipped:
        log("== the status page")
        results["status_page"] = status_page_bench(args.work)
    if "status-reads" not in skipped:
        log("== status reads")
        results["status_reads"] = status_reads_bench(args.work, largest)

    rows = []
    for key, d in top["definitions"].items():
        f = d["full"]
        # The every-profile and the 30-day audience are held to 1.5× (time and WAL); the others
        # keep the earlier 2× and 3×.
        time_target, wal_target = (1.5, 1.5) if key in FULL_SYNC_KEYS else (2.0, 3.0)
        rows.append((f"full sync, the command: {key} ({d['members']:,} members)", f["ours_ms"] / 1000, f["floor_ms"] / 1000,
                     "s", time_target))
        rows.append((f"  WAL per member (floor: its rows into a table with a primary key)",
                     f["wal_bytes"] / max(1, d["members"]), f["floor_wal_bytes"] / max(1, d["members"]), "B", wal_target))
        if "incremental" in d:
            i = d["incremental"]
            rows.append((f"incremental, 1% churn + 1 h: {key} ({i['evaluation']} of {i['affected']:,}, {i['changes']:,} changes)",
                         i["ours_ms"] / 1000, i["floor_ms"] / 1000, "s", 0.2))
    for size in sizes:
        e = results["sizes"][str(size)].get("etl")
        if e:
            rows.append((f"after an ETL touching every profile ({size:,}), run vs run --full (full by cost: {e['chosen_full']} runs)",
                         e["ours_ms"] / 1000, e["floor_ms"] / 1000, "s", 1.1))
    if "sql" in top:
        q = top["sql"]
        rows.append((f"full sync: a SQL audience ({q['members']:,} rows; floor: the query alone into a table with a primary key)",
                     q["ours_ms"] / 1000, q["floor_ms"] / 1000, "s", 2.0))
        if "command_ms" in q:
            rows.append(("  the same, the command's wall time", q["command_ms"] / 1000, q["floor_ms"] / 1000, "s", None))
    if "delivery" in top:
        d = top["delivery"]
        rows.append((f"delivery to the sandbox, requests/s ({d['rows']:,} rows)", d["ours_per_s"], d["floor_per_s"], "req/s", 0.7))
        if "wal_bytes" in d:
            rows.append(("  WAL per delivered row (floor: the ledger rows alone)", d["wal_bytes"] / max(1, d["rows"]),
                         d["floor_wal_bytes"] / max(1, d["rows"]), "B", None))
    if "ingest" in top:
        g = top["ingest"]
        rows.append((f"ingest events/s ({g['events']:,} events, {g['file_bytes'] / 2**20:.0f} MiB)", g["ours_per_s"], g["floor_per_s"], "ev/s", 0.5))
        rows.append(("  the same vs COPY into a table shaped like engage.events (keys, indexes, FK)", g["ours_per_s"],
                     g["shaped_floor_per_s"], "ev/s", 0.5))
        rows.append((f"  the same vs ingest without the change-capture triggers ({g['log_rows']:,} log rows)", g["ours_per_s"],
                     g["untriggered_per_s"], "ev/s", 0.9))
    print(f"\nengage-sync benchmarks — {largest:,} profiles × {args.events_per_profile} events — {results['machine']}\n")
    print(f"{'figure':<92} {'ours':>12} {'floor':>12} {'ratio':>7} {'target':>8}")
    for name, ours, floor, unit, target in rows:
        r = ratio(ours, floor)
        at_most = unit in ("s", "B")
        if target is None:
            target_text, ok = "—", True
        else:
            target_text = f"≤{target}×" if at_most else f"≥{target:.0%}"
            ok = r <= target if at_most else r >= target
        print(f"{name:<92} {ours:>10.2f}{unit[0]:>2} {floor:>10.2f}{unit[0]:>2} {r:>6.2f}× {target_text:>7}{'' if ok else ' MISS'}")
    if "delivery" in top:
        e2e = top["delivery"]["end_to_end_s"]
        print(f"{'end-to-end full sync of all_customers to the sandbox':<92} {e2e:>10.1f} s {'180.00':>10} s {e2e / 180:>6.2f}× {'<3 min':>7}{'' if e2e < 180 else ' MISS'}")
    if "cycle" in top:
        c = top["cycle"]
        after, before = c["after"]["seconds"], c["before"]["seconds"]
        label = "the baseline binary" if args.baseline_bin else "run --full"
        print(f"{'cron cycle of 50 definitions, 1% churn + 1 h (' + str(c['after']['runs']) + ' runs)':<92} {after:>10.1f} s {'60.00':>10} s {after / 60:>6.2f}× {'≤60 s':>7}{'' if after <= 60 else ' MISS'}")
        print(f"{'  the same before (' + label + ')':<92} {before:>10.1f} s {'':>12} {before / after:>6.1f}× {'≥5× faster':>10}{'' if before >= 5 * after else ' MISS'}")
    if "status_page" in results:
        print_status_page(results["status_page"])
    if "status_reads" in results:
        print_status_reads(results["status_reads"])
    for key in FULL_SYNC_KEYS:
        print(f"\nfull sync of {key}, the command's wall time, at each size:")
        for size in sizes:
            d = results["sizes"][str(size)]["definitions"][key]
            f, members = d["full"], max(1, d["members"])
            t, w = ratio(f["ours_ms"], f["floor_ms"]), ratio(f["wal_bytes"], f["floor_wal_bytes"])
            print(f"  {size:>10,} profiles ({d['members']:,} members): {f['ours_ms'] / 1000:6.2f} s vs {f['floor_ms'] / 1000:6.2f} s "
                  f"({t:4.2f}×, target ≤1.5×{'' if t <= 1.5 else ' MISS'}); "
                  f"WAL {f['wal_bytes'] / members:4.0f} vs {f['floor_wal_bytes'] / members:4.0f} B/member ({w:4.2f}×, target ≤1.5×{'' if w <= 1.5 else ' MISS'}); "
                  f"of it evaluate {f['evaluate_ms'] / 1000:.2f} s, diff {f['diff_ms'] / 1000:.2f} s")
    print("\npeak memory (VmHWM):")
    for command, kb in top["peak_kb"].items():
        print(f"  {command:<40} {kb / 1024:8.1f} MB{'' if kb < 150 * 1024 else '  MISS (target < 150 MB)'}")
    if len(sizes) > 1:
        print("\ngrowth (full sync of order_completed_last_30days):")
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
