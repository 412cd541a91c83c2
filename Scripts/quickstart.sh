#!/usr/bin/env bash
# A five-minute demo on a private PostgreSQL under .data/ (kept between runs): build, migrate,
# generate sample data, define audiences and traits, start the Vero sandbox, run a full sync,
# move time forward (ENGAGE_SYNC_NOW), run an incremental sync, and show what was sent. Rerunning starts the
# demo database afresh. With --serve it ends by leaving `serve` running with the status page on
# http://127.0.0.1:9464/ until Ctrl-C.
set -euo pipefail
keep_serving=0
[ "${1:-}" = "--serve" ] && keep_serving=1
cd "$(dirname "$0")/.."
source Scripts/lib-postgres.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "PostgreSQL"
pg_ensure_installed
mkdir -p .data
pg_private_stop "$PWD/.data/pg" # a previous run that was interrupted
pg_private_start "$PWD/.data/pg"
sandbox_pid=""
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null
  pg_private_stop "$PWD/.data/pg"
}
trap cleanup EXIT INT TERM
PGOPTIONS="-c client_min_messages=warning" psql "$DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS engage_demo" -c "CREATE DATABASE engage_demo"
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT_PRIVATE/engage_demo"
echo "private cluster in .data/pg on 127.0.0.1:$PGPORT_PRIVATE, database engage_demo"

say "build"
swift build --product engage-sync 2>&1 | tail -n 1
es() { .build/debug/engage-sync "$@"; }

say "engage-sync migrate"
es migrate

say "sample data: 3,000 profiles, ~45,000 events over 90 days"
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT setseed(0.2024) \gset
INSERT INTO engage.profiles (profile_id, user_id, email, traits, created_at)
SELECT 'user-' || i,
       CASE WHEN i % 50 = 0 THEN NULL ELSE 'user-' || i END,            -- 2% are email-only
       lower(first) || '.' || lower(last) || i || '@example.com',
       jsonb_build_object('first_name', first, 'last_name', last,
                          'plan', (ARRAY['free', 'free', 'pro', 'enterprise'])[1 + floor(random() * 4)::int],
                          'country', (ARRAY['US', 'GB', 'FR', 'DE', 'NO'])[1 + floor(random() * 5)::int]),
       now() - random() * interval '400 days'
FROM generate_series(1, 3000) i,
     LATERAL (SELECT (ARRAY['Ann', 'Bob', 'Chloé', 'Dmitri', 'Eve', 'Farah', 'Goran', 'Hana'])[1 + floor(random() * 8)::int] AS first,
                     (ARRAY['Smith', 'Lee', 'García', 'Müller', 'Okafor', 'Nakamura'])[1 + floor(random() * 6)::int] AS last) n;
INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
SELECT 'signup-' || i, 'user-' || i, 'Signed Up', '{}', now() - random() * interval '90 days' FROM generate_series(1, 3000) i;
INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
SELECT 'view-' || g, 'user-' || (1 + floor(random() * 3000)::int), 'Product Viewed',
       jsonb_build_object('product', 'sku-' || floor(random() * 40)::int,
                          'category', (ARRAY['shoes', 'bags', 'hats', 'coats', 'socks'])[1 + floor(random() * 5)::int]),
       now() - random() * interval '90 days'
FROM generate_series(1, 25000) g;
INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
SELECT 'order-' || g, 'user-' || (1 + floor(random() * 3000)::int), 'Order Completed',
       jsonb_build_object('total', round((10 + random() * 240)::numeric, 2), 'currency', 'USD'),
       now() - random() * interval '90 days'
FROM generate_series(1, 6000) g;
INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
SELECT 'open-' || g, 'user-' || (1 + floor(random() * 2400)::int), 'Email Opened', '{}', now() - random() * interval '90 days'
FROM generate_series(1, 11000) g;
-- The application's own billing table, which SQL definitions read where it is.
-- 40 subscribers are not engage profiles yet: the first SQL run creates them.
CREATE SCHEMA demo;
CREATE TABLE demo.subscriptions (user_id text PRIMARY KEY, email text, plan text NOT NULL, status text NOT NULL);
INSERT INTO demo.subscriptions
SELECT 'user-' || i, NULL, (ARRAY['free', 'pro', 'enterprise'])[1 + i % 3], CASE WHEN i % 7 = 0 THEN 'canceled' ELSE 'active' END
FROM generate_series(1, 3000, 4) i;
INSERT INTO demo.subscriptions
SELECT 'partner-' || i, 'partner' || i || '@example.com', 'enterprise', 'active' FROM generate_series(1, 40) i;
-- SQL definitions log in as a role that may read demo's tables and nothing else.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'engage_demo_sql') THEN
        CREATE ROLE engage_demo_sql LOGIN PASSWORD 'quickstart-sql-password';
    END IF;
END $$;
GRANT USAGE ON SCHEMA demo TO engage_demo_sql;
GRANT SELECT ON ALL TABLES IN SCHEMA demo TO engage_demo_sql;
ANALYZE;
SQL
export ENGAGE_SQL_ROLE=engage_demo_sql ENGAGE_SQL_PASSWORD=quickstart-sql-password

say "engage-sync define examples/definitions.json examples/sql-definitions.json"
es define examples/definitions.json examples/sql-definitions.json

say "the Vero sandbox (a local Vero-compatible API)"
export VERO_AUTH_TOKEN=quickstart-token
sandbox_log=$(mktemp)
.build/debug/engage-sync sandbox --port 0 --token "$VERO_AUTH_TOKEN" > "$sandbox_log" &
sandbox_pid=$!
for _ in $(seq 1 100); do grep -q listening "$sandbox_log" && break; sleep 0.1; done
sandbox_url=$(grep -o 'http://[0-9.:]*' "$sandbox_log")
echo "listening on $sandbox_url"
# The sandbox has no rate limit; the default (100 requests/s, Vero's) would make the first sync
# of ~34,000 changes take five minutes here.
es destination add vero --base-url "$sandbox_url" --token-env VERO_AUTH_TOKEN --rate 2000

say "engage-sync preview vip_buyers"
es preview vip_buyers --limit 3

say "engage-sync preview paying_subscribers   (a SQL audience over demo.subscriptions, run read-only)"
es preview paying_subscribers --limit 3

say "engage-sync run   (first run: a full sync of every definition)"
es run   # the email-only profiles are skipped (missing_user_id): expected, so the run succeeds

later=$(date -u -d '+20 hours' +%Y-%m-%dT%H:%M:%SZ)
say "time passes: the next day ($later), 400 new orders have arrived"
# The clock moves with ENGAGE_SYNC_NOW instead of rewriting the data: orders leave the 30-day
# window as time passes, and the incremental run finds them without a full evaluation.
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -v later="$later" <<'SQL'
INSERT INTO engage.events (message_id, profile_id, event, properties, occurred_at)
SELECT 'order-new-' || g, 'user-' || (1 + floor(random() * 3000)::int), 'Order Completed',
       jsonb_build_object('total', round((10 + random() * 240)::numeric, 2), 'currency', 'USD'),
       :'later'::timestamptz - random() * interval '20 hours'
FROM generate_series(1, 400) g;
SQL

say "ENGAGE_SYNC_NOW=$later engage-sync run --all   (incremental: only what changed is evaluated and sent)"
ENGAGE_SYNC_NOW=$later es run --all

say "user-5 cancels (a change in the application's own table), and the SQL audience syncs the exit"
psql "$DATABASE_URL" -X -q -c "UPDATE demo.subscriptions SET status = 'canceled' WHERE user_id = 'user-5'"
ENGAGE_SYNC_NOW=$later es run --key paying_subscribers --key subscription_plan
psql "$DATABASE_URL" -X -P pager=off -c "
SELECT key, user_id, op, value, status FROM engage.sync_changelog
WHERE user_id = 'user-5' AND key IN ('paying_subscribers', 'subscription_plan') ORDER BY created_at"

vip=$(psql "$DATABASE_URL" -X -At -c "SELECT user_id FROM engage.audience_members WHERE key = 'vip_buyers' ORDER BY user_id LIMIT 1")
say "engage-sync explain vip_buyers --user-id $vip   (why this user is a VIP, with the evidence)"
ENGAGE_SYNC_NOW=$later es explain vip_buyers --user-id "$vip"

say "engage-sync define --plan   (the 30-day window narrowed to 14 days: what it would send; nothing stored)"
narrower=$(mktemp --suffix .json)
sed 's/"condition": {"event": "Order Completed", "within": "30d"}}/"condition": {"event": "Order Completed", "within": "14d"}}/' \
  examples/definitions.json > "$narrower"
ENGAGE_SYNC_NOW=$later es define --plan "$narrower" | grep -v '^unchanged'
rm -f "$narrower"

say "engage-sync serve, and Vero's email events coming back (the loop closed)"
# serve runs what is due and delivers, with /healthz, /metrics and POST /webhooks/vero. The
# sandbox is told to post Vero's sent/delivered/opened webhooks after each identify it accepts.
command -v curl > /dev/null || { apt-get update -qq && apt-get install -y -qq curl > /dev/null; }
export ENGAGE_WEBHOOK_SECRET=quickstart-webhook-secret
serve_log=$(mktemp)
.build/debug/engage-sync serve --port 0 --tick 2 > "$serve_log" &
serve_pid=$!
for _ in $(seq 1 100); do grep -q listening "$serve_log" && break; sleep 0.1; done
serve_url=$(grep -o 'http://[0-9.:]*' "$serve_log")
echo "serve listening on $serve_url"
curl -s -X POST "$sandbox_url/_sandbox/webhooks" -d "{\"url\": \"$serve_url/webhooks/vero\", \"secret\": \"$ENGAGE_WEBHOOK_SECRET\"}"; echo
ENGAGE_SYNC_NOW=$later es resync --key paying_subscribers > /dev/null || true   # identifies, so the sandbox "sends emails"
cat > "$(dirname "$serve_log")/opened.json" <<'JSON'
{"name": "Opened an email in the last 7 days", "key": "opened_recently", "type": "audience",
 "condition": {"event": "Email Opened", "within": "7d"}}
JSON
es define "$(dirname "$serve_log")/opened.json"
for _ in $(seq 1 60); do
  n=$(psql "$DATABASE_URL" -X -A -t -c "SELECT count(*) FROM engage.sync_changelog WHERE key = 'opened_recently' AND status = 'delivered'")
  [ "$n" -gt 0 ] && break; sleep 1
done
psql "$DATABASE_URL" -X -P pager=off -c "
SELECT event, count(*) AS events FROM engage.events WHERE event LIKE 'Email %' AND properties ? 'vero' GROUP BY 1 ORDER BY 1"
psql "$DATABASE_URL" -X -P pager=off -c "
SELECT key, members, delivered_true, pending FROM engage.sync_status WHERE key = 'opened_recently'"
curl -s "$serve_url/healthz"; echo
curl -s "$serve_url/metrics" | grep -E '^engage_sync_(runs_total|deliveries_total)' | head -5
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=""

say "what each sync sent"
psql "$DATABASE_URL" -X -P pager=off -c "
SELECT r.id AS run, c.key, r.mode, r.status, r.evaluation, r.affected AS evaluated, r.members, r.entered, r.exited,
       r.changed, r.skipped
FROM engage.sync_runs r JOIN engage.computations c ON c.id = r.computation_id
WHERE c.type = 'audience' ORDER BY r.id"

say "a few real changes and the Vero requests they became"
# Rows keep what varies (Vero id, value); the Segment call is built when delivery claims the row,
# and the request sent (without the token) is kept on the row.
psql "$DATABASE_URL" -X -P pager=off -A -t -c "
SELECT op || ' ' || coalesce(vero_id, '-') || ' = ' || value::text || E'\n→ ' || (request -> 0 ->> 'method') || ' '
       || (request -> 0 ->> 'path') || ' ' || (request -> 0 -> 'body')::text || E'\n'
FROM (SELECT DISTINCT ON (o.op) o.op, o.vero_id, o.value, o.request FROM engage.outbox o JOIN engage.computations c ON c.id = o.computation_id
      WHERE c.key = 'order_completed_last_30days' AND o.status = 'delivered' AND o.request IS NOT NULL ORDER BY o.op, o.id DESC) x"

say "explore with psql \"$DATABASE_URL\" (start the cluster again with Scripts/quickstart.sh)"
cat <<'SQL'
-- who is in an audience right now
SELECT key, count(*) FROM engage.audience_members GROUP BY key ORDER BY key;
-- recent exits, and whether Vero confirmed them
SELECT key, user_id, status, delivered_at FROM engage.sync_changelog WHERE op = 'exit' ORDER BY created_at DESC LIMIT 10;
-- everything that was not delivered, and why
SELECT key, status, reason, count(*) FROM engage.delivery_failures GROUP BY 1, 2, 3;
SQL

cat <<'EOF2'

To sync to your real Vero account instead of the sandbox:
  export VERO_AUTH_TOKEN=<your Vero auth token>        # never stored in the database
  engage-sync destination add vero --base-url https://api.getvero.com --token-env VERO_AUTH_TOKEN
  engage-sync run                                      # from cron, every few minutes
EOF2

if [ "$keep_serving" = 1 ]; then
  say "the status page: http://127.0.0.1:9464/ (serve keeps syncing; Ctrl-C stops it)"
  .build/debug/engage-sync serve --host 127.0.0.1 --port 9464 --tick 10 &
  serve_pid=$!
  wait "$serve_pid" || true
  serve_pid=""
else
  say "to look rather than query: Scripts/quickstart.sh --serve, then open http://127.0.0.1:9464/"
fi
