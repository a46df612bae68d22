#!/usr/bin/env bash
# Runbook Procedure 1: full database restore of the latest base backup (or BACKUP_FILE),
# replaying every archived WAL file, as a Kubernetes restore Job runs it.
#
# Usage: restore-postgresql.sh [--config FILE]
#
# Environment (a restore Job's envFrom secrets and env):
#   WALVAULT_REPO, WALVAULT_ENV, BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE (or WALVAULT_ENCRYPTION=none), AWS_*, ...
#                       the repository, as for every walvault binary (or --config FILE /
#                       WALVAULT_CONFIG)
#   PGDATA              data directory to restore into (required; must be empty unless FORCE or DELTA)
#   BACKUP_FILE         latest (default; the runbook's latest.sql.gz.enc means the same) or a
#                       backup name as `walvault list` shows it
#   RECOVERY_TARGET     latest (default: replay all archived WAL) or immediate (stop as soon
#                       as the backup is consistent)
#   ARCHIVE             on: the restored server archives into the repository as its
#                       postgresql.conf says -- set it when the restore replaces production (the
#                       Job does), so that the new timeline's history file and WAL are archived
#                       and the next restore can follow it; off (default): pitr-prepare writes
#                       archive_mode = 'off' -- side restores never write into the archive
#   TARGET_TIMELINE     latest (PostgreSQL's default: the highest timeline after the backup's;
#                       refused when two branches pass through the backup), current (the
#                       backup's) or a timeline id, as `walvault list` shows them
#   SKIP_CONFIRMATION   true: no prompt. Otherwise type yes on a terminal; without a terminal
#                       it refuses (exit 5) and writes nothing
#   FORCE               true: delete what PGDATA holds first (pitr-prepare --force)
#   DELTA               true: PGDATA holds this cluster (a damaged volume, an old copy): keep
#                       the files that match the backup, fetch the others, delete what the
#                       backup does not have (pitr-prepare --delta); another cluster's PGDATA
#                       is refused (exit 5). Not with FORCE
#   START_SERVER        true (default): start PostgreSQL, wait until it is promoted, run
#                       VERIFY_SQL, stop it; false: stop after pitr-prepare, print the command
#   PG_START_TIMEOUT    seconds to wait for recovery to end (default 3600)
#   VERIFY_SQL          verification query (default: SELECT count(*) FROM pg_class), run as
#                       VERIFY_USER (default PGUSER, else postgres) on VERIFY_DB (default
#                       PGDATABASE, else postgres)
#   KEEP_RUNNING        true: leave the verified server running on its private socket
#   PG_BIN              PostgreSQL server binaries (default: the restored version's under
#                       /usr/lib/postgresql, else 15, else pg_ctl on PATH)
#   WALVAULT_BIN_DIR    directory of walvault's binaries (default: target/release beside
#                       this script, else PATH)
#
# Exit codes: 0 restored (and verified), 2 bad setting, 5 not confirmed or refused by
# pitr-prepare, 7 PostgreSQL did not recover, or recovery ended short of what the archive
# holds on the timeline it followed; otherwise pitr-prepare's own code (1 no
# backup, 3 storage, 4 corrupt or wrong key, 6 local I/O).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
        --config) [ $# -ge 2 ] || fail 2 "--config needs a FILE"; use_config_file "$2"; shift 2 ;;
        --config=*) use_config_file "${1#--config=}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) fail 2 "unknown argument $1 (see --help)" ;;
    esac
done

backup=$(backup_name "${BACKUP_FILE:-latest}")
case ${RECOVERY_TARGET:-latest} in
    latest) target=--latest target_desc="the end of the archive (all archived WAL)" ;;
    immediate) target=--immediate target_desc="the backup's consistency point (immediate)" ;;
    *) fail 2 "RECOVERY_TARGET=$RECOVERY_TARGET: expected latest or immediate (for a point in time use postgresql-pitr-restore.sh)" ;;
esac
backup_desc=$backup
[ "$backup" = latest ] && backup_desc="latest (the newest complete backup)"

restore_main "$backup_desc" "$target_desc" --backup "$backup" "$target"
