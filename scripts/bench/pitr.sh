#!/usr/bin/env bash
# PITR replay benchmark, the harness's swappable PITR stage (scripts/bench/harness.py calls
# it, or the script named by BENCH_PITR_SCRIPT, with the same interface):
#
#   scripts/bench/pitr.sh OUT_JSON
#
# Environment: WALVAULT_BIN_DIR (walvault's binaries), PG_BIN, BENCH_SEGMENTS (WAL segments
# to replay, default 32), BENCH_PGBACKREST (1: also pgBackRest archive-get async).
# Writes OUT_JSON: {"segments": N, "methods": [{"name", "seconds", "s_per_seg"}, ...]}.
#
# One scratch cluster archives its WAL at once with cp, wal-push and pgBackRest; a plain base
# backup (pg_basebackup -X none) is then recovered four ways, each timed from pg_ctl start
# to "in production": the replay floor (WAL already in pg_wal, no restore_command), cp as
# restore_command, wal-fetch (prefetch on, its default), pgBackRest archive-get (async,
# process-max 2, zst + aes-256-cbc). Loopback only; the servers are stopped and the scratch
# directory removed on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/../lib.sh"
OUT=${1:?usage: $0 OUT_JSON}
SEGMENTS=${BENCH_SEGMENTS:-32}
PGBR=${BENCH_PGBACKREST:-0}
command -v pgbackrest >/dev/null 2>&1 || PGBR=0
PORT=54350
WAL_PUSH=$(walvault_bin wal-push)
WAL_FETCH=$(walvault_bin wal-fetch)
ensure_postgres

WORK=$(scratch_dir pitr-bench)
SRC=$WORK/src DST=$WORK/dst ARCH=$WORK/archive
cleanup() {
    local d
    for d in "$SRC" "$DST"; do
        if [ -f "$d/postmaster.pid" ]; then
            as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Everything the postgres user runs reads its settings from files in WORK.
as_pg mkdir -p "$ARCH" "$WORK/repo" "$WORK/pgbr-repo" "$WORK/pgbr-spool"
as_pg sh -c "head -c 32 /dev/urandom | base64 > '$WORK/key' && chmod 600 '$WORK/key'"
as_pg sh -c "printf 'WALVAULT_REPO=file://%s\nWALVAULT_KEY_FILE=%s\nWALVAULT_ENV=bench\nWALVAULT_LOG=warn\n' '$WORK/repo' '$WORK/key' > '$WORK/walvault.conf'"
as_pg sh -c "cat > '$WORK/pgbr.conf'" <<EOF
[global]
repo1-path=$WORK/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=benchmarkbenchmarkbenchmark
compress-type=zst
compress-level=1
log-level-console=warn
log-level-file=off
lock-path=$WORK/pgbr-spool
spool-path=$WORK/pgbr-spool
archive-async=y
process-max=2
[bench]
pg1-path=$DST
pg1-socket-path=$WORK
pg1-port=$PORT
EOF

archive_cmd="cp %p $ARCH/%f && WALVAULT_CONFIG=$WORK/walvault.conf $WAL_PUSH %p"
if [ "$PGBR" = 1 ]; then
    archive_cmd="$archive_cmd && pgbackrest --config=$WORK/pgbr.conf --stanza=bench --pg1-path=$SRC --archive-async=n archive-push %p"
fi
as_pg "$PG_BIN/initdb" -D "$SRC" -U postgres --auth=trust --no-sync >/dev/null
cat >>"$SRC/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = '$archive_cmd'
max_wal_size = 4GB
synchronous_commit = off
checkpoint_timeout = 30s
EOF
psql_src() { as_pg "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres -d postgres -c "$1"; }
as_pg "$PG_BIN/pg_ctl" -D "$SRC" -l "$WORK/src.log" -w -t 120 start >/dev/null
if [ "$PGBR" = 1 ]; then
    as_pg pgbackrest --config="$WORK/pgbr.conf" --stanza=bench --pg1-path="$SRC" stanza-create >/dev/null
fi
as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
as_pg "$PG_BIN/pg_basebackup" -h "$WORK" -p "$PORT" -U postgres -D "$WORK/base" -Fp -X none -c fast >/dev/null
start_lsn=$(psql_src "SELECT pg_current_wal_lsn() - '0/0'")
deadline=$((SECONDS + 1800))
while :; do
    now_lsn=$(psql_src "SELECT pg_current_wal_lsn() - '0/0'")
    [ $(((${now_lsn%.*} - ${start_lsn%.*}) / 16777216)) -ge "$SEGMENTS" ] && break
    [ "$SECONDS" -lt "$deadline" ] || die "WAL generation did not finish in time"
    as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -n -T 5 -c 4 -j 2 postgres >/dev/null 2>&1
done
psql_src "SELECT pg_switch_wal()" >/dev/null
deadline=$((SECONDS + 600))
until [ -z "$(find "$SRC/pg_wal/archive_status" -name '*.ready' -print -quit)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "archiving did not catch up in time"
    sleep 0.2
done
as_pg "$PG_BIN/pg_ctl" -D "$SRC" -m fast -w -t 300 stop >/dev/null
# Segments replayed: from the backup's start segment to the last archived one.
first=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\))$/\1/p' "$WORK/base/backup_label")
[ -n "$first" ] || die "no start segment in the base backup's backup_label"
replayed=$(find "$ARCH" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' | awk -v f="$first" '$0 >= f' | wc -l)
log "PITR bench: $replayed archived segments to replay, from $first"

# recover NAME RESTORE_COMMAND: restore the base backup into DST, start, time to promoted.
# An empty RESTORE_COMMAND is the floor: the archived WAL copied into pg_wal beforehand.
results=()
run=0
recover() {
    local name=$1 cmd=$2 t0 t1 state deadline logf
    run=$((run + 1))
    logf=$WORK/dst-$run.log
    rm -rf "$DST"
    cp -a "$WORK/base" "$DST"
    rm -rf "$WORK/pgbr-spool/archive"
    if [ -z "$cmd" ]; then
        find "$ARCH" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -exec cp -t "$DST/pg_wal" {} +
        chown -R --reference="$WORK/base" "$DST"
    else
        printf "restore_command = '%s'\n" "$cmd" >>"$DST/postgresql.conf"
        as_pg touch "$DST/recovery.signal"
    fi
    printf "archive_mode = off\n" >>"$DST/postgresql.conf"
    sync
    t0=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$DST" -l "$logf" -W start >/dev/null
    # Done = the server accepts connections and is out of recovery (the control file copied
    # from the backup says "in production" from the start, so it cannot tell).
    deadline=$((SECONDS + 1800))
    local tries=0
    while :; do
        state=$(as_pg "$PG_BIN/psql" -X -A -t -h "$WORK" -p "$PORT" -U postgres -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
        [ "$state" = f ] && break
        tries=$((tries + 1))
        if [ $((tries % 50)) = 0 ] && ! as_pg "$PG_BIN/pg_ctl" -D "$DST" status >/dev/null 2>&1; then
            die "$name: the server stopped during recovery: $(tail -n 5 "$logf")"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "$name: recovery did not finish in time"
        sleep 0.02
    done
    t1=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$DST" -m immediate -w -t 60 stop >/dev/null
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    log "PITR bench: $name: $secs s"
    results+=("$(printf '{"name": "%s", "seconds": %s, "s_per_seg": %s}' "$name" "$secs" \
        "$(awk -v s="$secs" -v n="$replayed" 'BEGIN { printf "%.4f", s / n }')")")
}

recover "replay floor (WAL already in pg_wal)" ""
recover "cp as restore_command" "cp $ARCH/%f %p"
recover "wal-fetch (prefetch default)" "WALVAULT_CONFIG=$WORK/walvault.conf $WAL_FETCH %f %p"
if [ "$PGBR" = 1 ]; then
    recover "pgBackRest archive-get (async, process-max 2)" "pgbackrest --config=$WORK/pgbr.conf --stanza=bench archive-get %f \"%p\""
fi

{
    printf '{"script": "scripts/bench/pitr.sh", "segments": %s, "methods": [' "$replayed"
    sep=""
    for r in "${results[@]}"; do printf '%s%s' "$sep" "$r"; sep=", "; done
    printf ']}\n'
} >"$OUT"
