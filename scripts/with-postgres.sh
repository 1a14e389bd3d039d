#!/usr/bin/env bash
# Run a command with a throw-away PostgreSQL server on loopback (Debian's package), its URL in
# MEDCODER_TEST_POSTGRES_URL; the server and its data are removed afterwards. Without PostgreSQL
# the command runs anyway and the PostgreSQL test skips, saying why.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ]; then
    echo "PostgreSQL is not installed: the audit store's PostgreSQL test will skip" >&2
    exec "$@"
fi
dir=$(mktemp -d /tmp/medcoder-pg.XXXXXX)
port=${MEDCODER_PG_PORT:-55432}
as_owner=()
if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
    chown postgres "$dir"
    as_owner=(runuser -u postgres --)
fi
stop() { "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap stop EXIT
"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
export MEDCODER_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
"$@"
