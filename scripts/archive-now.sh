#!/usr/bin/env bash
# Ship the newest WAL to the archive now and wait until it is there: commit an empty
# transaction (so every moment up to now is a reachable recovery target), switch to a new WAL
# segment, and wait until pg_stat_archiver shows it archived by wal-push. For checking a new
# deployment, before planned maintenance, before a PITR rehearsal, and after a restore.
#
# Usage: archive-now.sh [--timeout SECONDS]      (default 300)
# Connection: libpq's PGHOST, PGPORT, PGUSER (default $POSTGRES_USER, else postgres); database postgres.
# Exit status: 0 archived; 1 not archived in time (see the archiver's failures it prints);
# 7 the server could not be queried.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

TIMEOUT=300
while [ $# -gt 0 ]; do
    case $1 in
        --timeout) TIMEOUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) log "error: unknown argument $1"; exit 2 ;;
    esac
done
DB_USER=${PGUSER:-${POSTGRES_USER:-postgres}}
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -U "$DB_USER" -d postgres -c "$1" || exit 7; }

q "SELECT txid_current()" >/dev/null
LAST=$(q "SELECT pg_walfile_name(pg_current_wal_lsn())")
q "SELECT pg_switch_wal()" >/dev/null
DEADLINE=$(( $(date +%s) + TIMEOUT ))
# Archived: PostgreSQL has renamed the segment's .ready status file to .done (the .done file
# goes at a later checkpoint; then a later segment's name in pg_stat_archiver says it). The
# archiver's last name alone is not enough: a base backup's history file sorts after its segment.
DONE_SQL="SELECT pg_stat_file('pg_wal/archive_status/$LAST.ready', true) IS NULL
    AND (pg_stat_file('pg_wal/archive_status/$LAST.done', true) IS NOT NULL
         OR (length(last_archived_wal) = 24 AND last_archived_wal >= '$LAST'))
    FROM pg_stat_archiver"
while :; do
    if [ "$(q "$DONE_SQL")" = t ]; then
        echo "archived $LAST"
        exit 0
    fi
    IFS='|' read -r archived failed last_failed <<<"$(q "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver")"
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "not archived in ${TIMEOUT}s: $LAST (archiver: last archived ${archived:-none}, $failed failures, last failed ${last_failed:-none}; see the server log for wal-push's error)" >&2
        exit 1
    fi
    sleep 1
done
