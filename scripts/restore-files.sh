#!/usr/bin/env bash
# Procedure 3 of the runbook: restore one kind of file storage from a backup, in place. The
# backup is restored into a new directory on the same volume first; only when that succeeded
# are the current contents moved aside into TARGET_DIR/.walvault-previous-<time> (kept for a
# rollback: delete it once the restore is validated) and the restored files moved in.
#
# Usage: RESTORE_TYPE=uploads TARGET_DIR=/data/uploads [BACKUP_NAME=latest] restore-files.sh
#   RESTORE_TYPE  uploads, assets or config
#   TARGET_DIR    the directory to restore (a volume's mount point is fine: lost+found stays)
#   BACKUP_NAME   a backup name from `walvault ls files/<env>/<kind>/`, or latest (default)
# Settings: the repository settings of every walvault binary (WALVAULT_REPO, the key, ...).
# Exit status: 0 restored; walvault's status when the restore fails (1 no such backup,
# 2 config, 3 storage, 4 key or corrupt, 6 io), with TARGET_DIR untouched.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

KIND=${RESTORE_TYPE:-}
case $KIND in
    uploads|assets|config) ;;
    *) log "error: RESTORE_TYPE=$KIND: expected uploads, assets or config"; exit 2 ;;
esac
TARGET_DIR=${TARGET_DIR:?set TARGET_DIR to the directory to restore}
BACKUP=${BACKUP_NAME:-latest}
[ -d "$TARGET_DIR" ] || { log "error: $TARGET_DIR is not a directory"; exit 2; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
STAGE=$TARGET_DIR/.walvault-restore-$STAMP
PREVIOUS=$TARGET_DIR/.walvault-previous-$STAMP
log "restoring $KIND backup $BACKUP into $STAGE"
rc=0
walvault files-restore --kind "$KIND" --backup "$BACKUP" "$STAGE" || rc=$?
if [ "$rc" != 0 ]; then
    rm -rf "$STAGE"
    log "error: the restore failed with status $rc; $TARGET_DIR is unchanged"
    exit "$rc"
fi
mkdir "$PREVIOUS"
find "$TARGET_DIR" -mindepth 1 -maxdepth 1 ! -name lost+found ! -name '.walvault-restore-*' \
    ! -name '.walvault-previous-*' -exec mv -t "$PREVIOUS" -- {} +
find "$STAGE" -mindepth 1 -maxdepth 1 -exec mv -t "$TARGET_DIR" -- {} +
rmdir "$STAGE"
log "restored $KIND into $TARGET_DIR; the previous contents are in $PREVIOUS"
