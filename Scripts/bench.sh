#!/usr/bin/env bash
# Benchmarks (DESIGN §15): a release build on a private PostgreSQL; every figure is printed
# beside its floor measured in the same run. Writes bench-results.json.
#   Scripts/bench.sh [--profiles N] [--events-per-profile M] [--sizes 100000,300000,1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/lib-postgres.sh

pg_ensure_installed
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq wrk >&2 || apt-get update -qq && apt-get install -y -qq wrk >&2; fi
fi

echo "== release build" >&2
swift build -c release --scratch-path .build-release --product engage-sync >&2

work=$(mktemp -d /tmp/engage-sync-bench.XXXXXX)
chmod 755 "$work"
cleanup() { pg_private_stop "$work/pg"; rm -rf "$work"; }
trap cleanup EXIT INT TERM
pg_private_start "$work/pg"

ENGAGE_SYNC_BIN="$PWD/.build-release/release/engage-sync" python3 Scripts/bench.py --work "$work" "$@"
