#!/usr/bin/env bash
# The main job: a full drill on a local directory repository. A scratch PostgreSQL cluster
# archives with wal-push into file://, takes a base backup, writes in batches, and a copy
# is recovered through wal-fetch; the report says rows expected vs found, what the archive
# holds and how long recovery took.
#
# Usage: scripts/drill.sh            (builds the binaries, installs PostgreSQL 15 if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_postgres
log "building walvault (cargo build --release --bins)"
cargo build --release --bins -q
BIN=$PWD/target/release

WORK=$(scratch_dir drill)
PORT=${DRILL_PORT:-54329}
PRIMARY=$WORK/primary
COPY=$WORK/restored
REPO_DIR=$WORK/repo
PIDS=()
cleanup() {
    for d in "$PRIMARY" "$COPY"; do
        [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# The repository settings the server passes to wal-push and wal-fetch: a 0600 config file
# with a random key, never a command-line argument.
KEY_FILE=$WORK/walvault.key
CONF=$WORK/walvault.conf
head -c 32 /dev/urandom | base64 > "$KEY_FILE"
printf 'WALVAULT_REPO=file://%s\nWALVAULT_KEY_FILE=%s\nWALVAULT_ENV=drill\nWALVAULT_CACHE_DIR=%s/cache\n' \
    "$REPO_DIR" "$KEY_FILE" "$WORK" > "$CONF"
chmod 600 "$KEY_FILE" "$CONF"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$KEY_FILE" "$CONF"; fi

psql_p() { as_pg "$PG_BIN/psql" -X -A -t -q -h "$WORK" -p "$1" -U postgres -d postgres -c "$2"; }

log "initdb and start a scratch cluster archiving with wal-push"
as_pg "$PG_BIN/initdb" -D "$PRIMARY" -U postgres --auth=trust --no-sync >/dev/null
cat >> "$PRIMARY/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = 'WALVAULT_CONFIG=$CONF $BIN/wal-push %p'
archive_timeout = 60
CONF
as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY" -l "$WORK/primary.log" -w start >/dev/null

psql_p "$PORT" "CREATE TABLE orders(id bigserial primary key, batch int, payload text)"
as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s 5 -q postgres >/dev/null 2>&1

log "base backup (pg_basebackup -X none: only the archive can make it consistent)"
as_pg "$PG_BIN/pg_basebackup" -h "$WORK" -p "$PORT" -U postgres -X none -c fast -D "$COPY"

for b in 1 2 3 4 5; do
    psql_p "$PORT" "INSERT INTO orders(batch, payload) SELECT $b, md5(g::text) FROM generate_series(1, 20000) g"
    as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -n -t 500 -c 2 postgres >/dev/null 2>&1
done
EXPECTED=$(psql_p "$PORT" "SELECT count(*) FROM orders")
LAST=$(psql_p "$PORT" "SELECT pg_walfile_name(pg_current_wal_lsn())")
psql_p "$PORT" "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 1 600); do
    DONE=$(psql_p "$PORT" "SELECT coalesce(last_archived_wal,'') >= '$LAST' FROM pg_stat_archiver")
    [ "$DONE" = t ] && break
    sleep 0.1
done
[ "$DONE" = t ] || die "archiving did not reach $LAST"
read -r ARCHIVED FAILED <<<"$(psql_p "$PORT" "SELECT archived_count, failed_count FROM pg_stat_archiver" | tr '|' ' ')"
as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY" -m fast -w stop >/dev/null

log "recover the copy with restore_command = 'wal-fetch %f %p'"
cat >> "$COPY/postgresql.conf" <<CONF
port = $((PORT + 1))
archive_mode = off
restore_command = 'WALVAULT_CONFIG=$CONF $BIN/wal-fetch %f %p'
CONF
as_pg touch "$COPY/recovery.signal"
T0=$(date +%s.%N)
as_pg "$PG_BIN/pg_ctl" -D "$COPY" -l "$WORK/restored.log" -w start >/dev/null
for _ in $(seq 1 1800); do
    [ "$(psql_p $((PORT + 1)) "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
    sleep 0.1
done
T1=$(date +%s.%N)
FOUND=$(psql_p $((PORT + 1)) "SELECT count(*) FROM orders")

STORED=$(du -sb "$REPO_DIR/wal" | cut -f1)
OBJECTS=$(find "$REPO_DIR/wal" -type f | wc -l)
RAW=$((OBJECTS * 16 * 1024 * 1024))
cat <<REPORT

walvault drill report ($(date -u +%Y-%m-%dT%H:%M:%SZ))
  repository          file://$REPO_DIR (encrypted, zstd)
  WAL archived        $ARCHIVED files by wal-push, $FAILED failures
  WAL stored          $OBJECTS objects, $((STORED / 1024 / 1024)) MiB for ~$((RAW / 1024 / 1024)) MiB of WAL
  recovery            $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s from start to promoted (wal-fetch for every segment)
  rows expected       $EXPECTED
  rows found          $FOUND
REPORT
if [ "$EXPECTED" = "$FOUND" ] && [ "$FAILED" = 0 ]; then
    echo "  result              PASS"
else
    echo "  result              FAIL"; exit 1
fi
