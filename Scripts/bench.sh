#!/usr/bin/env bash
# Benchmarks (docs/performance.md): a release build on a private PostgreSQL; every figure is printed
# beside its floor measured in the same run. Writes bench-results.json.
#   Scripts/bench.sh [--profiles N] [--events-per-profile M] [--sizes 100000,300000,1000000]
#   Scripts/bench.sh --growth [--sizes 100000,300000,1000000,3000000]   (docs/scaling.md)
# BENCH_BUILD=debug uses the debug build instead (Scripts/test.sh's smoke run, so the script
# cannot rot; its figures mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/lib-postgres.sh

pg_ensure_installed
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "error: install ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2; }
fi

if [ "${BENCH_BUILD:-release}" = debug ]; then
  swift build --product engage-sync >&2
  bin="$PWD/.build/debug/engage-sync"
else
  echo "== release build" >&2
  swift build -c release --scratch-path .build-release --product engage-sync >&2
  bin="$PWD/.build-release/release/engage-sync"
fi

work=$(mktemp -d /tmp/engage-sync-bench.XXXXXX)
chmod 755 "$work"
# A failed run keeps the server's log (what PostgreSQL said, and the plans it logged).
cleanup() {
  local status=$?
  pg_private_stop "$work/pg"
  if [ "$status" -ne 0 ] && [ -f "$work/pg/server.log" ]; then
    cp "$work/pg/server.log" bench-server.log && echo "bench failed: the server's log is in bench-server.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
pg_private_start "$work/pg"

ENGAGE_SYNC_BIN="$bin" python3 Scripts/bench.py --work "$work" "$@"
