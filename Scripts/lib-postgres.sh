# Shared by Scripts/test.sh, quickstart.sh and bench.sh (sourced, not run).
# Installs PostgreSQL and libpq-dev from Debian packages when missing, and starts a private
# cluster: `pg_private_start DIR` sets PG_BIN, PGPORT_PRIVATE and DATABASE_URL;
# `pg_private_stop DIR` stops it.

pg_ensure_installed() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! pkg-config --exists libpq 2>/dev/null; then
    echo "== installing PostgreSQL and libpq-dev from Debian packages" >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: PostgreSQL is missing and this is not root; install postgresql and libpq-dev" >&2
      return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql libpq-dev pkg-config >&2
  fi
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  export PG_BIN
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a PostgreSQL server binary as the postgres user when we are root (initdb refuses root).
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_private_start() {
  local dir=$1 port
  pg_ensure_installed || return 1
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
    chown postgres "$dir"
    chmod 700 "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
  fi
  port=$(pg_free_port)
  pg_private_launch "$dir" "$port" || return 1
  PGPORT_PRIVATE=$port
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

# Starts the server of an initialised private cluster on a given port (pg_private_start picks a
# free one; tests that stop and start a server keep its port).
pg_private_launch() {
  local dir=$1 port=$2
  # Loopback only, trust auth (set by initdb -A trust), socket in the cluster's own folder.
  # max_connections: the test suite runs its tests at once, each with a database, pools and
  # child processes of its own; under a loaded machine they overlap more (300 ran out once).
  pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=1000 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=512MB" \
    start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
}

pg_private_stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] && pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  return 0
}
