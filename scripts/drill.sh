#!/usr/bin/env bash
# The main job: a full point-in-time-recovery drill on a local directory repository, through
# the runbook's own scripts. A scratch PostgreSQL cluster archives with wal-push into
# file://; scripts/backup-postgresql.sh takes a base backup; rows are written in five
# batches, with a timestamp recorded between batches 2 and 3; the primary stops; then
# scripts/postgresql-pitr-restore.sh --target-time <that timestamp> restores into a second
# directory, starts PostgreSQL, which replays WAL through wal-fetch and is promoted at the
# target. The report says rows expected vs found, backup size and speed, restore and
# recovery times, what wal-push archived, and PASS/FAIL (the exit code).
#
# Usage: scripts/drill.sh      (builds the binaries, showing cargo's progress: the first build
#                              takes 10-15 minutes on 2 cores; installs PostgreSQL 15 if missing)
#        KEEP=1 scripts/drill.sh   keeps the scratch directory; DRILL_PORT sets the port.
# Runs as root (servers and pg_ctl then run as postgres) or as a normal user.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_postgres
if [ -x target/release/pitr-prepare ]; then
    log "building walvault (cargo build --release --bins): up to date in seconds after the first build"
else
    log "building walvault (cargo build --release --bins): the first build compiles a few hundred crates, 10-15 minutes on 2 cores; cargo's progress follows"
fi
cargo build --release --bins
BIN=$PWD/target/release
export WALVAULT_BIN_DIR=$BIN PG_BIN

WORK=$(scratch_dir drill)
PORT=${DRILL_PORT:-54329}
PRIMARY=$WORK/primary
RESTORED=$WORK/restored
REPO_DIR=$WORK/repo
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [ -f "$PRIMARY/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The repository settings the server and the scripts pass to the binaries: a 0600 config
# file naming a 0600 key file, never a command-line argument.
KEY_FILE=$WORK/walvault.key
CONF=$WORK/walvault.conf
head -c 32 /dev/urandom | base64 > "$KEY_FILE"
printf 'WALVAULT_REPO=file://%s\nWALVAULT_KEY_FILE=%s\nWALVAULT_ENV=drill\nWALVAULT_CACHE_DIR=%s/cache\n' \
    "$REPO_DIR" "$KEY_FILE" "$WORK" > "$CONF"
chmod 600 "$KEY_FILE" "$CONF"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$KEY_FILE" "$CONF"; fi
# The settings of the caller's environment must not leak into the drill.
unset WALVAULT_REPO WALVAULT_ENV WALVAULT_KEY_FILE BACKUP_ENCRYPTION_KEY WALVAULT_CACHE_DIR PGHOST PGPORT PGDATABASE
export WALVAULT_CONFIG=$CONF PGUSER=postgres

psql_p() { as_pg "$PG_BIN/psql" -X -A -t -q -h "$WORK" -p "$PORT" -U postgres -d postgres -c "$1"; }

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

psql_p "CREATE TABLE orders(id bigserial primary key, batch int, payload text, at timestamptz default clock_timestamp())"
as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s 5 -q postgres >/dev/null 2>&1

log "base backup with scripts/backup-postgresql.sh (base-backup), as the database host's CronJob runs it"
as_pg env PGHOST="$WORK" PGPORT="$PORT" PGDATA="$PRIMARY" BACKUP_JSON="$WORK/backup.json" \
    scripts/backup-postgresql.sh --checkpoint fast > "$WORK/backup.out"
sed 's/^/  /' "$WORK/backup.out" >&2
B_NAME=$(json_field "$WORK/backup.json" name)
B_BYTES=$(json_field "$WORK/backup.json" bytes)
B_STORED=$(json_field "$WORK/backup.json" stored_bytes)
B_SECS=$(json_field "$WORK/backup.json" seconds)

batch() {
    psql_p "INSERT INTO orders(batch, payload) SELECT $1, md5(g::text) FROM generate_series(1, 20000) g"
    as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -n -t 500 -c 2 postgres >/dev/null 2>&1
}
log "writing batches 1 and 2"
batch 1
batch 2
sleep 1
TARGET=$(psql_p "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
EXPECTED=$(psql_p "SELECT count(*) FROM orders")
log "recovery target recorded: $TARGET UTC ($EXPECTED rows)"
sleep 1
log "writing batches 3, 4 and 5"
for b in 3 4 5; do batch "$b"; done
TOTAL=$(psql_p "SELECT count(*) FROM orders")
LAST=$(psql_p "SELECT pg_walfile_name(pg_current_wal_lsn())")
psql_p "SELECT pg_switch_wal()" >/dev/null
DONE=f
for _ in $(seq 1 600); do
    DONE=$(psql_p "SELECT coalesce(last_archived_wal,'') >= '$LAST' FROM pg_stat_archiver")
    [ "$DONE" = t ] && break
    sleep 0.1
done
[ "$DONE" = t ] || die "archiving did not reach $LAST"
read -r ARCHIVED FAILED <<<"$(psql_p "SELECT archived_count, failed_count FROM pg_stat_archiver" | tr '|' ' ')"
log "the primary is lost: stopping it"
as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY" -m fast -w stop >/dev/null
STORED=$(du -sb "$REPO_DIR/wal" | cut -f1)
OBJECTS=$(find "$REPO_DIR/wal" -type f | wc -l)

log "point-in-time recovery with scripts/postgresql-pitr-restore.sh --target-time '$TARGET'"
set +e
SKIP_CONFIRMATION=true START_SERVER=true PGDATA=$RESTORED VERIFY_SQL="SELECT count(*) FROM orders" \
    scripts/postgresql-pitr-restore.sh --target-time "$TARGET" > "$WORK/restore.out"
RC=$?
set -e
sed 's/^/  /' "$WORK/restore.out" >&2
field() { sed -n "s/^  $1 *//p" "$WORK/restore.out" | head -n 1; }
FOUND=$(field 'verification result')
PREPARE=$(field 'pitr-prepare')
RECOVER=$(field 'time to recover')
REACHED=$(field 'WAL reached')

RESULT=PASS CODE=0
if [ "$RC" != 0 ]; then
    RESULT="FAIL (postgresql-pitr-restore.sh exited $RC: $(exit_meaning "$RC"))" CODE=$RC
elif [ "$FOUND" != "$EXPECTED" ]; then
    RESULT="FAIL (rows differ)" CODE=1
elif [ "$FAILED" != 0 ]; then
    RESULT="FAIL (archive failures)" CODE=1
fi
cat <<REPORT

walvault drill report ($(date -u +%Y-%m-%dT%H:%M:%SZ))
  repository          file://$REPO_DIR (encrypted, zstd)
  base backup         ${B_NAME:-none}: $(human_bytes "${B_BYTES:-0}"), stored $(human_bytes "${B_STORED:-0}")
  backup throughput   $(awk -v b="${B_BYTES:-0}" -v s="${B_SECS:-0}" 'BEGIN { if (s > 0) printf "%.1f MB/s (%.1f s)", b / s / 1e6, s; else print "-" }')
  WAL archived        $ARCHIVED files by wal-push, $FAILED failures ($OBJECTS objects, $(human_bytes "$STORED") stored)
  recovery target     $TARGET UTC (between batches 2 and 3)
  restore             ${PREPARE:--} (pitr-prepare: backup laid into PGDATA, WAL chain checked)
  time to recover     ${RECOVER:--}
  WAL reached         ${REACHED:--}
  rows expected       $EXPECTED at the target ($TOTAL at the end)
  rows found          ${FOUND:--}
  result              $RESULT, exit code $CODE
REPORT
exit "$CODE"
