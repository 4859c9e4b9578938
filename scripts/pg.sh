#!/usr/bin/env bash
# pg.sh -- a private, throw-away PostgreSQL server for keyrail's tests.
#
#   scripts/pg.sh start DIR   initialise (first time) and start a server whose
#                             data, socket and log live in DIR; waits until it
#                             accepts connections and writes its URL to DIR/url
#   scripts/pg.sh url DIR     prints that URL
#   scripts/pg.sh stop DIR    stops it at once (-m immediate); safe to repeat
#
# The server listens on a free TCP port on 127.0.0.1 and on a unix socket in
# DIR/socket, trusts every local and loopback connection (test use only:
# never point it at data you care about), runs with fsync=off and has an
# empty database keyrail_test (ICU en-US collation where available). Run as root (the tests do), the server runs as
# the postgres system user, since initdb refuses root. Prints nothing but
# errors. PG_BINDIR overrides where initdb/pg_ctl/pg_isready are looked for.
set -euo pipefail

die() {
  echo "pg.sh: $*" >&2
  exit 1
}

usage() {
  echo "usage: pg.sh start|stop|url DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
[ -n "$2" ] || usage
case $cmd in start) mkdir -p -- "$2" ;; esac
[ -d "$2" ] || die "no directory $2"
dir=$(cd -- "$2" && pwd -P)
data=$dir/data
sock=$dir/socket
log=$dir/postgres.log
# Commands run as the postgres user must not start in a directory it cannot
# read (root's home): work from /.
cd /

bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then
    echo "$PG_BINDIR"
    return
  fi
  local b
  for b in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [ -x "$b/initdb" ] && [ -x "$b/pg_ctl" ]; then
      echo "$b"
      return
    fi
  done
  die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (install the postgresql package)"
}
bin=$(bindir)

if [ "$(id -u)" = 0 ]; then
  id -u postgres >/dev/null 2>&1 || die "no 'postgres' system user (install the postgresql package)"
  pg_user=postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  pg_user=$(id -un)
  as_pg() { "$@"; }
fi

running() {
  [ -f "$data/postmaster.pid" ] && as_pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

ready() { # PORT
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$1" -d postgres -U postgres -t 2 >/dev/null 2>&1
}

port_free() { # PORT: nothing accepts connections on it
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_url() { # PORT
  local tmp=$dir/url.tmp
  echo "postgresql://postgres@127.0.0.1:$1/keyrail_test" >"$tmp"
  mv -f -- "$tmp" "$dir/url"
}

# Starts the postmaster on PORT and polls pg_isready until it accepts
# connections. Returns 1 when the port turned out to be taken, dies on any
# other failure.
start_on() { # PORT
  local port=$1 deadline=$((SECONDS + 60)) from
  from=$(wc -l <"$log")
  as_pg "$bin/pg_ctl" start -W -s -D "$data" -l "$log" -o "-p $port" >/dev/null ||
    die "pg_ctl start failed; see $log"
  while ! ready "$port"; do
    if tail -n +"$((from + 1))" "$log" | grep -q 'could not bind\|could not create any TCP/IP sockets'; then
      as_pg "$bin/pg_ctl" stop -s -D "$data" -m immediate >/dev/null 2>&1 || true
      return 1
    fi
    if tail -n +"$((from + 1))" "$log" | grep -q 'database system is shut down\|PANIC:'; then
      tail -n +"$((from + 1))" "$log" >&2
      die "the server stopped while starting; see $log"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "the server did not accept connections within 60s; see $log"
    sleep 0.05
  done
}

do_start() {
  if running; then
    local port
    port=$(sed -n 4p "$data/postmaster.pid")
    [ -f "$dir/url" ] || write_url "$port"
    return 0
  fi
  # The server must reach DIR; a socket path is limited to 107 bytes.
  if [ "$pg_user" = postgres ] && ! runuser -u postgres -- test -x "$dir"; then
    die "user postgres cannot enter $dir (or one of its parents); use a directory such as /tmp/kr-pg"
  fi
  [ ${#sock} -le 80 ] || die "$dir is too long a path for a unix socket directory"
  mkdir -p -- "$data" "$sock"
  touch -- "$log"
  chmod 700 -- "$data"
  chown -- "$pg_user" "$data" "$sock" "$log"
  if [ ! -f "$data/PG_VERSION" ]; then
    if ! as_pg "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C \
      --no-sync >"$dir/initdb.log" 2>&1; then
      cat "$dir/initdb.log" >&2
      die "initdb failed"
    fi
    cat >>"$data/postgresql.conf" <<EOF

# scripts/pg.sh: a private test server
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
shared_buffers = 32MB
log_min_messages = warning
log_min_error_statement = panic
log_line_prefix = '%m [%p] '
EOF
    # Trust: local sockets and loopback only.
    cat >"$data/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
EOF
  fi
  rm -f -- "$dir/url"
  local port tries=0
  while :; do
    tries=$((tries + 1))
    [ $tries -le 20 ] || die "no free TCP port found on 127.0.0.1"
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    port_free "$port" || continue
    start_on "$port" && break
  done
  if ! "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tA \
    -c "SELECT 1 FROM pg_database WHERE datname = 'keyrail_test'" | grep -q 1; then
    # A linguistic (ICU en-US) collation, as production databases usually
    # have, so that ordering which differs from SQLite's byte order shows.
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres -T template0 -E UTF8 --locale=C \
      --locale-provider=icu --icu-locale=en-US keyrail_test 2>/dev/null ||
      "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres keyrail_test ||
      die "could not create database keyrail_test"
  fi
  write_url "$port"
}

do_stop() {
  rm -f -- "$dir/url"
  [ -f "$data/postmaster.pid" ] || return 0
  if ! as_pg "$bin/pg_ctl" stop -s -D "$data" -m immediate -w >/dev/null 2>&1; then
    if running; then die "could not stop the server in $dir"; fi
  fi
  return 0
}

case $cmd in
start) do_start ;;
stop) do_stop ;;
url)
  [ -f "$dir/url" ] || die "no server running in $dir (scripts/pg.sh start $2)"
  cat -- "$dir/url"
  ;;
*) usage ;;
esac
