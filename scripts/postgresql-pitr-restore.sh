#!/usr/bin/env bash
# Runbook Procedure 2: point-in-time recovery. Restores the newest base backup that finished
# before the target (or --backup NAME) and replays archived WAL up to the target, as a
# Kubernetes restore Job runs it.
#
# Usage: postgresql-pitr-restore.sh --target-time T [--backup NAME] [--config FILE]
#        postgresql-pitr-restore.sh --target-lsn L | --target-name N | --target-xid X ...
#
#   --target-time T     any form PostgreSQL's recovery_target_time accepts
#                       ('2024-01-15 10:30:00' = UTC, with an offset, RFC 3339)
#   --target-lsn L      an LSN, e.g. 0/3000060
#   --target-name N     a restore point made with pg_create_restore_point(N)
#   --target-xid X      a transaction id
#   --backup NAME       start from this backup (as `walvault list` shows it) instead
#
# Environment: the same as restore-postgresql.sh: the repository settings (WALVAULT_REPO,
# BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE or WALVAULT_ENCRYPTION=none, AWS_*, ...), PGDATA, SKIP_CONFIRMATION, FORCE, DELTA,
# START_SERVER, PG_START_TIMEOUT, VERIFY_SQL, KEEP_RUNNING, PG_BIN, WALVAULT_BIN_DIR,
# ARCHIVE (on when the restore replaces production, as the Job sets it; off by default:
# archive_mode = 'off', nothing written into the archive) and TARGET_TIMELINE (latest,
# current or N: the timeline to recover along, as `walvault list` shows them; needed when
# two branches pass through the backup); TARGET_TIME stands for --target-time when no
# target is given.
#
# Exit codes: 0 recovered (and verified), 2 bad arguments, 5 not confirmed or refused by
# pitr-prepare (a target the archive cannot reach, a non-empty PGDATA), 7 PostgreSQL did not
# recover; otherwise pitr-prepare's own code.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

targets=() target_desc="" backup=""
add_target() {
    [ ${#targets[@]} -eq 0 ] || fail 2 "give one recovery target, not several"
    [ -n "$2" ] || fail 2 "$1 needs a value"
    targets=("$1" "$2")
    case $1 in
        --target-time) target_desc="time $2" ;;
        --target-lsn) target_desc="LSN $2" ;;
        --target-name) target_desc="restore point $2" ;;
        --target-xid) target_desc="transaction $2" ;;
    esac
}
while [ $# -gt 0 ]; do
    case $1 in
        --target-time | --target-lsn | --target-name | --target-xid | --backup | --config)
            [ $# -ge 2 ] || fail 2 "$1 needs a value"
            opt=$1 val=$2
            shift 2
            ;;
        --target-time=* | --target-lsn=* | --target-name=* | --target-xid=* | --backup=* | --config=*)
            opt=${1%%=*} val=${1#*=}
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) fail 2 "unknown argument $1 (see --help)" ;;
    esac
    case $opt in
        --backup) backup=$(backup_name "$val") ;;
        --config) use_config_file "$val" ;;
        *) add_target "$opt" "$val" ;;
    esac
done
if [ ${#targets[@]} -eq 0 ] && [ -n "${TARGET_TIME:-}" ]; then add_target --target-time "$TARGET_TIME"; fi
[ ${#targets[@]} -gt 0 ] || fail 2 "no recovery target: give --target-time T (or --target-lsn, --target-name, --target-xid)"

args=("${targets[@]}")
backup_desc="the newest that finished before the target"
if [ -n "$backup" ]; then
    args+=(--backup "$backup")
    backup_desc=$backup
fi
restore_main "$backup_desc" "$target_desc" "${args[@]}"
