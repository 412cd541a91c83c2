#!/usr/bin/env bash
# The test command (README, CI): installs PostgreSQL and Chromium if missing, starts a private cluster in a
# temporary directory on a free loopback port, runs `swift test` against it, always stops it.
# Extra arguments go to `swift test` (e.g. --filter MigrationsTests).
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/lib-postgres.sh

pg_ensure_installed
# Headless Chromium reads the status page in StatusPageTests (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then echo "error: install chromium (apt-get install chromium)" >&2; exit 1; fi
  echo "== installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi
export CHROMIUM="$(command -v chromium)"

work=$(mktemp -d /tmp/engage-sync-test.XXXXXX)
chmod 755 "$work"  # the postgres user must reach the cluster folder inside
cleanup() { pg_private_stop "$work/pg"; rm -rf "$work"; }
trap cleanup EXIT INT TERM

echo "== building (debug, with tests)"
swift build --build-tests

pg_private_start "$work/pg"
echo "== PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT_PRIVATE"
export ENGAGE_SYNC_BIN="$PWD/.build/debug/engage-sync"

echo "== swift test"
swift test --skip-build "$@"

# A small benchmark run on the debug build, so Scripts/bench.sh cannot rot (its figures are
# not checked: speed is judged by the real benchmark, never by a test). Skipped when the
# caller filters tests.
if [ $# -eq 0 ]; then
  echo "== benchmark smoke run (Scripts/bench.sh --profiles 10000, debug build)"
  pg_private_stop "$work/pg"
  BENCH_BUILD=debug Scripts/bench.sh --profiles 10000 > "$work/bench.log" 2>&1 \
    || { cat "$work/bench.log"; echo "the benchmark smoke run failed"; exit 1; }
  grep -E "^(engage-sync benchmarks|delivery|ingest)" "$work/bench.log" || true
fi
