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
while :; do
    IFS='|' read -r archived failed last_failed <<<"$(q "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver")"
    if [[ "$archived" > "$LAST" || "$archived" == "$LAST" ]]; then
        echo "archived $LAST (archiver: last archived $archived, $failed failures since stats reset)"
        exit 0
    fi
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "not archived in ${TIMEOUT}s: $LAST (archiver: last archived ${archived:-none}, $failed failures, last failed ${last_failed:-none}; see the server log for wal-push's error)" >&2
        exit 1
    fi
    sleep 1
done
