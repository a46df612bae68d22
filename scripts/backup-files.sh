#!/usr/bin/env bash
# The daily file-storage backup (the runbook's uploads, assets and config): one
# `walvault files-backup` per directory, each a streamed, compressed and encrypted archive under
# files/<env>/<kind>/. Every directory is tried even when an earlier one fails.
#
# Usage: backup-files.sh KIND=DIR [KIND=DIR ...]      KIND: uploads, assets or config
#   e.g. backup-files.sh uploads=/data/uploads assets=/data/assets config=/data/config
# Settings: the repository settings of every walvault binary (WALVAULT_REPO, the key, ...).
# Exit status: 0 all backed up, else the highest status of the failed backups (2 config,
# 3 storage, 4 key, 5 refused, 6 io).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -gt 0 ] || { log "error: nothing to back up; usage: backup-files.sh KIND=DIR [KIND=DIR ...]"; exit 2; }
worst=0
for spec in "$@"; do
    kind=${spec%%=*} dir=${spec#*=}
    if [ "$kind" = "$spec" ] || [ -z "$dir" ]; then
        log "error: $spec: expected KIND=DIR"; worst=$(( worst > 2 ? worst : 2 )); continue
    fi
    log "backing up $kind from $dir"
    rc=0
    walvault files-backup --kind "$kind" "$dir" || rc=$?
    if [ "$rc" != 0 ]; then
        log "error: $kind from $dir failed with status $rc"
        worst=$(( worst > rc ? worst : rc ))
    fi
done
exit "$worst"
