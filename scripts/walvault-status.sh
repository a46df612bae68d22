#!/usr/bin/env bash
# Archive health for monitoring, as the mykadoo-backup-status CronJob runs it: `walvault status
# --prometheus` with the given thresholds, printed to the log and, when PUSHGATEWAY_URL is set,
# pushed to a Prometheus Pushgateway (job "walvault", label env) for the alert rules in
# docs/operations.md.
#
# Usage: walvault-status.sh [walvault status flags, e.g. --max-wal-age 1h]
# Exit status: walvault status's (0 healthy, 8 a threshold is exceeded, 2-7 it could not
# check); 10 when healthy but the push to PUSHGATEWAY_URL failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

OUT=$(mktemp "${TMPDIR:-/tmp}/walvault-status.XXXXXX")
trap 'rm -f "$OUT"' EXIT
rc=0
walvault status --prometheus "$@" > "$OUT" || rc=$?
cat "$OUT"
if [ -n "${PUSHGATEWAY_URL:-}" ] && [ -s "$OUT" ]; then
    url="${PUSHGATEWAY_URL%/}/metrics/job/walvault/env/${WALVAULT_ENV:-production}"
    if ! curl -fsS --max-time 30 --data-binary @"$OUT" "$url"; then
        log "error: could not push the metrics to $url"
        [ "$rc" != 0 ] || rc=10
    fi
fi
exit "$rc"
