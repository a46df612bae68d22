#!/usr/bin/env bash
# The nightly base backup (the runbook's database backup CronJob, 02:00 UTC): base-backup
# of the running cluster into the repository, one time-stamped log line per step, a short
# summary, and base-backup's exit code (non-zero alerts).
#
# Usage: backup-postgresql.sh [--config FILE] [base-backup flags, e.g. --jobs 4]
#
# Environment (the CronJob's envFrom secrets), passed to base-backup as given:
#   WALVAULT_REPO, WALVAULT_ENV, WALVAULT_CLUSTER, BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE (a key is required;
#   WALVAULT_ENCRYPTION=none for an unencrypted repository),
#   AWS_*, ...          the repository, as for every walvault binary (or WALVAULT_CONFIG)
#   PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE
#                       the connection, as for psql (default: the local socket)
#   PGDATA              the server's data directory, read locally (default: the server's
#                       data_directory)
#   BACKUP_JSON         also keep base-backup's JSON summary in this file
#   WALVAULT_BIN_DIR    directory of walvault's binaries (default: target/release beside
#                       this script, else PATH)
#
# Exit codes: base-backup's (0 complete; 2 configuration, 3 storage, 4 key, 5 refused,
# 6 local I/O, 7 PostgreSQL).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case ${1:-} in
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
esac

BASE_BACKUP=$(walvault_bin base-backup)
summary=${BACKUP_JSON:-}
if [ -z "$summary" ]; then
    summary=$(mktemp "${TMPDIR:-/tmp}/walvault-backup.XXXXXX")
    trap 'rm -f "$summary"' EXIT
fi

log "start: base backup of ${PGHOST:-the local socket}${PGPORT:+ port $PGPORT} (PGDATA ${PGDATA:-from the server}) into ${WALVAULT_REPO:-the configured repository}${WALVAULT_ENV:+, env $WALVAULT_ENV}"
log "running $BASE_BACKUP --json${*:+ $*}"
set +e
"$BASE_BACKUP" --json "$@" 2>&1 >"$summary" | stamp_lines
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
    log "FAILED: base-backup exited with $rc ($(exit_meaning "$rc")); no backup was made complete and latest.json is unchanged"
    exit "$rc"
fi

name=$(json_field "$summary" name)
files=$(json_field "$summary" files)
bytes=$(json_field "$summary" bytes)
stored=$(json_field "$summary" stored_bytes)
secs=$(json_field "$summary" seconds)
compression=$(json_field "$summary" compression)
encrypted=$(json_field "$summary" encrypted)
rate=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { if (s > 0) printf "%.1f", b / s / 1e6; else print "-" }')
log "done: backup $name complete"
printf 'backup      %s\n' "$name"
printf 'size        %s (%s files)\n' "$(human_bytes "$bytes")" "$files"
printf 'stored      %s (%s, %s)\n' "$(human_bytes "$stored")" "$compression" \
    "$([ "$encrypted" = true ] && echo encrypted || echo "not encrypted")"
printf 'duration    %.1f s (%s MB/s)\n' "$secs" "$rate"
