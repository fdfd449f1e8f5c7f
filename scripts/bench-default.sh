#!/usr/bin/env bash
# Benchmark: the default partition at any size (issue 10). For each scenario a fresh table whose
# DEFAULT partition holds UNRELATED rows dated 2001 (no period will ever cover them) and NEW rows
# of the current month (the first period maintain creates), then:
#
#   1. refresh: `partkeeper run` (metrics_refresh 2s) for a few refreshes; the median and the
#      largest partkeeper_refresh_duration_seconds seen (one scrape every 2 s);
#   2. maintain: an application INSERT loop (pgbench, one client, rows dated today, which land in
#      the default until today's partition exists) runs while `partkeeper maintain` creates the
#      current month and `premake` = 3 ahead; the longest INSERT and maintain's wall time.
#
# Prints one Markdown table row per scenario (and appends them to $OUT when set).
#
# Usage: scripts/bench-default.sh
#        SCENARIOS="0:0 1000000:0" PK_BIN=/work/main/target/release/partkeeper scripts/bench-default.sh
#
# Environment (all optional):
#   SCENARIOS="0:0 1000000:0 10000000:0 0:50000 0:1000000"   unrelated:new rows per scenario
#   PK_BIN=target/release/partkeeper    the binary (built with cargo build --release when absent)
#   PORT=55441 HTTP_PORT=19841          fixed ports of the throwaway cluster and the daemon
#   LOCK_TIMEOUT=2s                     database.lock_timeout of the configuration
#   BENCH_DIR=$(mktemp -d)              cluster directory (~4 GB free for 10 M rows)
#   OUT                                 file to append the table rows to
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCENARIOS=${SCENARIOS:-"0:0 1000000:0 10000000:0 0:50000 0:1000000"}
BIN=${PK_BIN:-target/release/partkeeper}
PORT=${PORT:-55441}
HTTP_PORT=${HTTP_PORT:-19841}
LOCK_TIMEOUT=${LOCK_TIMEOUT:-2s}
PGB=${PARTKEEPER_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
D=${BENCH_DIR:-$(mktemp -d)}
[ -x "$BIN" ] || cargo build --release
BIN=$(realpath "$BIN")

as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$D"
as_pg "$PGB/initdb -D $D/data -A trust -U postgres" > "$D/initdb.log" 2>&1 || { cat "$D/initdb.log"; exit 1; }
as_pg "$PGB/pg_ctl -D $D/data -o '-p $PORT -k $D -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=1GB -c max_wal_size=8GB' -l $D/log start -w" > /dev/null
trap 'as_pg "$PGB/pg_ctl -D $D/data -m fast stop" > /dev/null 2>&1' EXIT
P="psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $PORT -U postgres -d postgres"

cat > "$D/pk.toml" <<T
[database]
url = "postgres://postgres@127.0.0.1:$PORT/postgres"
lock_timeout = "$LOCK_TIMEOUT"
[server]
listen = "127.0.0.1:$HTTP_PORT"
[schedule]
maintenance = "0 0 1 1 *"
run_on_start = false
metrics_refresh = "2s"
[[tables]]
name = "public.ev"
column = "d"
interval = "1 month"
premake = 3
T

echo "| default partition holds | its size | refresh, median / max of 6 | maintain wall | longest application INSERT during maintain | maintain said |"
echo "| --- | --- | --- | --- | --- | --- |"
for s in $SCENARIOS; do
  U=${s%%:*}; N=${s##*:}
  M1=$(date -u +%Y-%m-01)
  $P -c "DROP TABLE IF EXISTS ev; CREATE TABLE ev (id bigint, d date NOT NULL, body text) PARTITION BY RANGE (d);
         CREATE INDEX ON ev (d); CREATE TABLE ev_default PARTITION OF ev DEFAULT;
         INSERT INTO ev SELECT g, DATE '2001-01-01' + (g % 300), 'x' FROM generate_series(1, $U) g;
         INSERT INTO ev SELECT g, DATE '$M1' + (g % 28), 'n' FROM generate_series(1, $N) g;"
  $P -c "VACUUM ANALYZE ev"
  SIZE=$($P -At -c "SELECT pg_size_pretty(pg_relation_size('ev_default'))")

  timeout 14 "$BIN" --config "$D/pk.toml" run > "$D/daemon.log" 2>&1 &
  : > "$D/refresh"
  for _ in 1 2 3 4 5 6; do
    sleep 2
    curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^partkeeper_refresh_duration_seconds /{print $2 * 1000}' >> "$D/refresh"
  done
  wait
  REFRESH=$(sort -n "$D/refresh" | awk '{v[NR]=$1} END {if (NR == 0) print "?"; else printf "%.0f / %.0f ms", v[int((NR+1)/2)], v[NR]}')

  echo "INSERT INTO ev VALUES (0, current_date, 'app');" > "$D/ins.sql"
  rm -f "$D"/app.*
  ( cd "$D" && "$PGB/pgbench" -n -h 127.0.0.1 -p "$PORT" -U postgres -c 1 -T 30 -f ins.sql -l --log-prefix=app postgres > "$D/pgbench.out" 2>&1 ) &
  sleep 3
  START=$(date +%s.%N)
  "$BIN" --config "$D/pk.toml" maintain > "$D/maintain.out" 2>&1
  END=$(date +%s.%N)
  WALL=$(awk -v s="$START" -v e="$END" 'BEGIN{printf "%.2f s", e-s}')
  wait
  # pgbench -l: client, transaction, latency (us), script, epoch s, us (at the end of the
  # transaction). "During maintain": transactions that overlapped maintain's run.
  MAX=$(cat "$D"/app.* | awk -v s="$START" -v e="$END" '{l=$3/1000; t=$5+$6/1e6; if (l>all) all=l; if (t>=s && t-$3/1e6<=e && l>during) during=l} END {printf "%.0f ms (whole run %.0f ms)", during, all}')
  SAID=$(grep -Eo "(ok \([0-9]+ ms[^)]*\)|more than [0-9]+ row\(s\) of [^ ]+ [^ ]+)" "$D/maintain.out" | head -4 | tr '\n' ';' | sed 's/;$//;s/|/\\|/g')
  ROW="| $U unrelated + $N of the current month | $SIZE | $REFRESH | $WALL | $MAX | $SAID |"
  echo "$ROW"
  if [ -n "${OUT:-}" ]; then echo "$ROW" >> "$OUT"; fi
done
