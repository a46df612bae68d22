#!/usr/bin/env bash
# Time point-in-time recovery of the same WAL range four ways, on the same machine, from the
# same base backup: the replay floor (every segment already in pg_wal, restore_command
# failing), `cp` as restore_command, walvault (pitr-prepare writing restore_command =
# wal-fetch, default prefetch) and, when installed, pgBackRest's archive-get with async.
# Each is timed from `pg_ctl start` until the server has promoted and accepts connections
# ("database system is ready to accept connections" in its log, polled every 20 ms).
#
# Usage: scripts/bench-pitr.sh [SEGMENTS] [RUNS]   (default 70 segments, 1 run each; builds release binaries)
#   BENCH_ONLY="floor walvault"   only these variants
#   BENCH_BEFORE_BIN=DIR           also time the binaries in DIR (variant walvault-before)
#   BENCH_BIN=DIR                  the binaries to time (default target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
OUT_JSON=
if [[ "${1:-}" == *.json ]]; then
    # Called by the harness (scripts/bench/harness.py, stage restore): results also as JSON.
    OUT_JSON=$1
    SEGMENTS=${BENCH_SEGMENTS:-70}
    RUNS=${BENCH_PITR_RUNS:-2}
    BENCH_NO_BUILD=1
    BENCH_BIN=${WALVAULT_BIN_DIR:-}
    only="floor cp walvault"
    [ "${BENCH_PGBACKREST:-1}" = 1 ] && only="$only pgbackrest"
    ONLY=${BENCH_ONLY:-$only}
else
    SEGMENTS=${1:-70}
    RUNS=${2:-1}
    ONLY=${BENCH_ONLY:-floor cp walvault walvault-before pgbackrest}
fi

ensure_postgres
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --bins -q
BIN=${BENCH_BIN:-$PWD/target/release}
[ -n "$BIN" ] || BIN=$PWD/target/release
WORK=$(scratch_dir bench-pitr)
PORT=54341
RPORT=54342
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    for d in "$WORK/pg" "$WORK/r"; do
        [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    [ -n "${BENCH_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

head -c 32 /dev/urandom | base64 > "$WORK/key"
chmod 600 "$WORK/key"
chown postgres:postgres "$WORK/key" 2>/dev/null || true
mkdir -p "$WORK/plain" "$WORK/cache"
chown postgres:postgres "$WORK/plain" "$WORK/cache" 2>/dev/null || true
export WALVAULT_REPO="file://$WORK/repo" WALVAULT_KEY_FILE="$WORK/key" WALVAULT_LOG=warn
unset WALVAULT_CACHE_DIR

# The primary: archives every file both as a plain copy (for the floor and cp) and through wal-push.
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-sync >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = 'cp %p $WORK/plain/%f && $BIN/wal-push %p'
max_wal_size = 4GB
checkpoint_timeout = 30min
fsync = off
synchronous_commit = off
EOF
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
psql_p() { as_pg "$PG_BIN/psql" -X -A -t -h "$WORK" -p "$PORT" -U postgres -d postgres -c "$1"; }
as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
as_pg env PGHOST="$WORK" PGPORT="$PORT" PGUSER=postgres PGDATA="$WORK/pg" "$BIN/base-backup" --checkpoint fast >/dev/null 2>"$WORK/backup.err" \
    || { cat "$WORK/backup.err" >&2; die "base-backup failed"; }
start_lsn=$(psql_p "SELECT pg_current_wal_lsn()")
log "base backup done at $start_lsn; writing $SEGMENTS segments of pgbench WAL"
# Each round: a short pgbench run (small transactions) and an UPDATE of a quarter of the
# accounts (bulk heap WAL), so that the range is written in a minute or two.
k=0
while :; do
    as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -n -c 2 -T 3 postgres >/dev/null 2>&1
    psql_p "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 4 = $((k % 4))" >/dev/null
    k=$((k + 1))
    done_segs=$(psql_p "SELECT (pg_current_wal_lsn() - '$start_lsn'::pg_lsn) / 16777216")
    [ "${done_segs%.*}" -ge "$SEGMENTS" ] && break
done
expected=$(psql_p "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || '/' || (SELECT count(*) FROM pgbench_history)")
last=$(psql_p "SELECT pg_walfile_name(pg_current_wal_lsn() - 1)")
psql_p "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 1 600); do
    archived=$(psql_p "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ "$archived" < "$last" ]] || break
    sleep 0.2
done
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null
log "archived through $last"

# A prepared data directory for every run: pitr-prepare --latest, hot_standby off.
prepare() {
    rm -rf "$WORK/r" "$WORK/.walvault-cache"
    local t0 t1
    t0=$(now)
    as_pg "${PREPARE_BIN:-$BIN}/pitr-prepare" --pgdata "$WORK/r" --latest >/dev/null 2>"$WORK/prepare.err" \
        || { cat "$WORK/prepare.err" >&2; die "pitr-prepare failed"; }
    t1=$(now)
    PREPARE_S=$(elapsed "$t0" "$t1")
    cat >> "$WORK/r/postgresql.conf" <<EOF
port = $RPORT
hot_standby = off
archive_mode = off
EOF
}
set_restore_command() {
    as_pg sh -c "printf \"restore_command = '%s'\n\" \"\$1\" >> '$WORK/r/postgresql.auto.conf'" sh "$1"
}
# recover NAME: start, wait until promoted, check the data, record the time.
recover() {
    local t0 t1 secs got
    t0=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/r" -l "$WORK/r.log" -W start >/dev/null
    # pg_ctl -w returns once recovery starts; the server is ready when recovery has ended
    # (hot_standby = off: no connections before).
    local i
    for i in $(seq 1 180000); do
        grep -q "database system is ready to accept connections" "$WORK/r.log" 2>/dev/null && break
        [ -f "$WORK/r/postmaster.pid" ] || [ "$i" -lt 50 ] || { cat "$WORK/r.log" >&2; die "$1: the server stopped"; }
        sleep 0.02
    done
    t1=$(now)
    secs=$(elapsed "$t0" "$t1")
    got=$(as_pg "$PG_BIN/psql" -X -A -t -h "$WORK" -p "$RPORT" -U postgres -d postgres -c "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || '/' || (SELECT count(*) FROM pgbench_history)")
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/r" -m fast -w stop >/dev/null
    [ "$got" = "$expected" ] || die "$1: recovered $got, expected $expected"
    local restored
    restored=$(grep -c 'restored log file "0' "$WORK/r.log" || true)
    printf '%s %s %s %s\n' "$1" "$secs" "${PREPARE_S:-0}" "$restored" >> "$WORK/results"
    log "$1: recovered in $secs s (pitr-prepare ${PREPARE_S:-0} s, $restored segments through restore_command)"
    mv "$WORK/r.log" "$WORK/r.$1.log"
}

# The range: the segments recovery reads (from the backup's start), as cp restored them.
nseg=0
for _ in $(seq 1 "$RUNS"); do
    for variant in $ONLY; do
        case $variant in
            floor)
                prepare
                as_pg cp "$WORK"/plain/0000000* "$WORK/r/pg_wal/"
                rm -f "$WORK"/r/pg_wal/*.backup
                set_restore_command "false"
                recover floor ;;
            cp)
                prepare
                set_restore_command "cp $WORK/plain/%f %p"
                recover cp ;;
            walvault)
                prepare
                recover walvault ;;
            walvault-before)
                # Another build's binaries (BENCH_BEFORE_BIN) over the same archive.
                [ -n "${BENCH_BEFORE_BIN:-}" ] || continue
                PREPARE_BIN=$BENCH_BEFORE_BIN prepare
                recover walvault-before ;;
            pgbackrest)
                command -v pgbackrest >/dev/null || { log "pgbackrest not installed: skipped"; continue; }
                [ -f "$WORK/pgbr.conf" ] || {
                    mkdir -p "$WORK/pgbr" "$WORK/pgbr-spool"
                    chown postgres:postgres "$WORK/pgbr" "$WORK/pgbr-spool"
                    as_pg sh -c "cat > '$WORK/pgbr.conf'" <<EOF
[global]
repo1-path=$WORK/pgbr
spool-path=$WORK/pgbr-spool
archive-async=y
process-max=2
log-level-console=warn
log-path=$WORK/pgbr
lock-path=$WORK/pgbr
compress-type=zst
[bench]
pg1-path=$WORK/pg
pg1-socket-path=$WORK
pg1-port=$RPORT
EOF
                    # Fill pgBackRest's archive with the same WAL (archive-push from the plain copies).
                    as_pg pgbackrest --config="$WORK/pgbr.conf" --stanza=bench --no-online stanza-create >/dev/null 2>&1 || true
                    for f in "$WORK"/plain/0000000*; do
                        as_pg pgbackrest --config="$WORK/pgbr.conf" --stanza=bench --archive-async=n archive-push "$f" >/dev/null \
                            || die "pgbackrest archive-push $f failed"
                    done
                }
                prepare
                # archive-get insists that pg1-path is the server's data directory.
                as_pg sh -c "sed 's|^pg1-path=.*|pg1-path=$WORK/r|' '$WORK/pgbr.conf' > '$WORK/pgbr-get.conf'"
                set_restore_command "pgbackrest --config=$WORK/pgbr-get.conf --stanza=bench archive-get %f \"%p\""
                recover pgbackrest ;;
        esac
    done
done

# Latency of one wal-fetch call PostgreSQL makes for a segment already placed in pg_wal
# (verified, exit 1): pitr-prepare fetches 16 ahead, each is asked for once (no worker started).
if [[ " $ONLY " == *" walvault "* ]]; then
    WALVAULT_FETCH_PREFETCH=16 prepare
    as_pg python3 -c '
import subprocess, sys, time, os
os.chdir(sys.argv[1])
env = dict(os.environ, WALVAULT_FETCH_PREFETCH="0")
# The first call of the recovery (PostgreSQL asks for a history file first) places the
# segments pitr-prepare fetched ahead into pg_wal.
subprocess.call([sys.argv[2], "00000002.history", "pg_wal/RECOVERYHISTORY"], env=env)
names = sorted(n for n in os.listdir("pg_wal") if len(n) == 24)
times = []
for n in names:
    t0 = time.perf_counter()
    rc = subprocess.call([sys.argv[2], n, "pg_wal/RECOVERYXLOG"], env=env)
    times.append((time.perf_counter() - t0) * 1000)
    if rc != 1:
        sys.exit("wal-fetch %s: exit %d, expected 1 (in pg_wal)" % (n, rc))
times.sort()
print("wal-fetch for a segment in pg_wal: median %.1f ms, max %.1f ms over %d calls" % (times[len(times) // 2], times[-1], len(times)))
' "$WORK/r" "$BIN/wal-fetch" | tee -a "$WORK/latency"
fi

floor=$(awk '$1 == "floor" { s += $2; n++ } END { if (n) printf "%.2f", s / n }' "$WORK/results")
nseg=$(awk '$4 > n { n = $4 } END { print n + 0 }' "$WORK/results")
[ "$nseg" -gt 0 ] || nseg=$(find "$WORK/plain" -name '0000000*' ! -name '*.*' | wc -l)
printf '\n%d segments (%s); mean of %d run(s)\n' "$nseg" "$(human_bytes $((nseg * 16777216)))" "$RUNS"
printf '%-16s %8s %8s %10s %7s %10s %7s\n' variant mean_s min_s s/segment ratio prepare_s via_%p
awk -v n="$nseg" -v f="$floor" '{ s[$1] += $2; p[$1] += $3; r[$1] += $4; c[$1]++; if (!($1 in m) || $2 < m[$1]) m[$1] = $2 }
    END { for (v in s) printf "%-16s %8.2f %8.2f %10.4f %7s %10.2f %7d\n", v, s[v]/c[v], m[v], s[v]/c[v]/n,
          (f > 0 ? sprintf("%.2fx", s[v]/c[v]/f) : "-"), p[v]/c[v], r[v]/c[v] }' "$WORK/results" | sort
[ -f "$WORK/latency" ] && cat "$WORK/latency"
if [ -n "$OUT_JSON" ]; then
    python3 - "$WORK/results" "$nseg" "${WORK}/latency" > "$OUT_JSON" <<'PY'
import json, os, sys
names = {"floor": "replay floor (WAL already in pg_wal)", "cp": "cp as restore_command",
         "walvault": "wal-fetch (pitr-prepare: WAL read from pg_wal)",
         "pgbackrest": "pgBackRest archive-get (async, process-max 2)"}
runs = {}
for line in open(sys.argv[1]):
    v, secs, _prep, via = line.split()
    runs.setdefault(v, []).append((float(secs), int(via)))
n = int(sys.argv[2])
methods = [{"name": names.get(v, v), "seconds": sum(s for s, _ in r) / len(r), "s_per_seg": sum(s for s, _ in r) / len(r) / n,
            "runs": [s for s, _ in r], "segments_via_restore_path": max(x for _, x in r)} for v, r in runs.items()]
order = list(names)
methods.sort(key=lambda m: next((i for i, k in enumerate(order) if names[k] == m["name"]), 99))
latency = open(sys.argv[3]).read().strip() if os.path.exists(sys.argv[3]) else None
print(json.dumps({"script": "scripts/bench-pitr.sh", "segments": n, "methods": methods, "fetch_latency": latency}))
PY
fi
exit 0
