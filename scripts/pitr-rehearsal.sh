#!/usr/bin/env bash
# Rehearse a point-in-time recovery without touching production: restore the backup for a
# target time into a scratch directory, replay the archive up to the target with archiving
# off, check that nothing after the target was replayed, run the check queries, report how
# long recovery took, then stop the copy and delete it.
#
# Usage: pitr-rehearsal.sh --target-time T [--scratch-dir DIR] [--backup NAME]
#                          [--check-db DB] [--check-sql SQL]... [--timeout SECONDS] [--keep]
#   T             any form PostgreSQL's recovery_target_time accepts; no zone means UTC
#   --scratch-dir where the copy is made (default $TMPDIR, else /tmp); needs room for the database
#   --check-db    database the check queries run in (default postgres)
#   --check-sql   a query whose result is printed (repeatable)
#   --timeout     give up on replay after this many seconds (default 14400, the runbook's RTO)
#   --keep        leave the scratch copy (stopped) for inspection
# Settings: the repository settings of every walvault binary (WALVAULT_REPO, the key, ...);
# PGUSER is the restored cluster's superuser (default postgres); PG_BIN the server binaries;
# TARGET_TIMELINE (latest, current or N) the timeline to recover along (pitr-prepare
# --target-timeline). The copy never archives (pitr-prepare --archive off).
# Exit status: 0 rehearsal passed; pitr-prepare's status when it refuses (2 config, 3 storage,
# 4 key, 5 target not reachable); 7 the copy did not start or recover; 8 a check failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

TARGET='' SCRATCH=${TMPDIR:-/tmp} BACKUP='' CHECK_DB=postgres TIMEOUT=14400 KEEP=''
CHECKS=()
while [ $# -gt 0 ]; do
    case $1 in
        --target-time) TARGET=$2; shift 2 ;;
        --scratch-dir) SCRATCH=$2; shift 2 ;;
        --backup) BACKUP=$2; shift 2 ;;
        --check-db) CHECK_DB=$2; shift 2 ;;
        --check-sql) CHECKS+=("$2"); shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) log "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
[ -n "$TARGET" ] || { log "error: --target-time is required"; exit 2; }
case $TARGET in *[!0-9A-Za-z:+.\ -]*) log "error: --target-time $TARGET: not a time"; exit 2 ;; esac
DB_USER=${PGUSER:-postgres}

WORK=$(mktemp -d "$SCRATCH/walvault-rehearsal.XXXXXX")
chmod 700 "$WORK"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK"; fi
PGDATA_COPY=$WORK/pgdata
# A socket path must fit in 107 bytes: the socket gets a short directory of its own.
SOCK=$(mktemp -d /tmp/walvault-sock.XXXXXX)
chmod 700 "$SOCK"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$SOCK"; fi
cleanup() {
    if [ -f "$PGDATA_COPY/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_COPY" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$SOCK"
    if [ -z "$KEEP" ]; then rm -rf "$WORK"; else log "kept the copy in $WORK"; fi
}
trap cleanup EXIT

log "restoring the backup for $TARGET into $PGDATA_COPY"
prepare=(pitr-prepare --pgdata "$PGDATA_COPY" --target-time "$TARGET" --target-action promote --archive off)
[ -z "$BACKUP" ] || prepare+=(--backup "$BACKUP")
[ -z "${TARGET_TIMELINE:-}" ] || prepare+=(--target-timeline "$TARGET_TIMELINE")
T0=$(date +%s)
rc=0
as_pg "${prepare[@]}" || rc=$?
[ "$rc" = 0 ] || { log "error: pitr-prepare exited $rc"; exit "$rc"; }

# The copy listens on a private socket only, never archives (it must not add a timeline to
# the production archive) and trusts local connections whatever the backup's pg_hba.conf says.
printf 'local all all trust\n' > "$WORK/pg_hba.conf"
: > "$WORK/pg_ident.conf"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK/pg_hba.conf" "$WORK/pg_ident.conf"; fi
OPTS="-c listen_addresses='' -c unix_socket_directories='$SOCK' -c port=5432 -c archive_mode=off"
OPTS="$OPTS -c hba_file='$WORK/pg_hba.conf' -c ident_file='$WORK/pg_ident.conf'"
log "starting the copy; it replays the archive through wal-fetch up to the target"
if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_COPY" -l "$WORK/server.log" -o "$OPTS" -w -t "$TIMEOUT" start >/dev/null; then
    log "error: the copy did not start; the end of its log:"
    tail -n 30 "$WORK/server.log" >&2 || true
    exit 7
fi
q() { PGTZ=UTC as_pg "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$SOCK" -p 5432 -U "$DB_USER" "$@"; }
DEADLINE=$(( $(date +%s) + TIMEOUT ))
until [ "$(q -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_COPY" status >/dev/null 2>&1 || [ "$(date +%s)" -gt "$DEADLINE" ]; then
        log "error: recovery did not finish; the end of the copy's log:"
        tail -n 30 "$WORK/server.log" >&2 || true
        exit 7
    fi
    sleep 1
done
SECONDS_TO_RECOVER=$(( $(date +%s) - T0 ))

LAST=$(q -d postgres -c "SELECT coalesce(pg_last_xact_replay_timestamp()::text, 'none')")
AFTER=$(q -d postgres -c "SELECT coalesce(pg_last_xact_replay_timestamp() > '$TARGET'::timestamptz, false)")
echo "target               $TARGET (UTC unless it has an offset)"
echo "last transaction     $LAST"
echo "time to recover      ${SECONDS_TO_RECOVER} s (restore, replay, promotion)"
for sql in "${CHECKS[@]}"; do
    echo "check                $sql"
    q -d "$CHECK_DB" -F ' ' -c "$sql" | sed 's/^/                     /'
done
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_COPY" -m fast -w stop >/dev/null
if [ "$AFTER" = t ]; then
    echo "result               FAIL: a transaction after the target was replayed"
    exit 8
fi
echo "result               PASS"
