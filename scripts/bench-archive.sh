#!/usr/bin/env bash
# Per-file cost of archiving one real 16 MiB WAL segment, measured in one run beside its
# baselines on the same machine: `cp` + fsync, `zstd -3 | openssl enc` + fsync, `wal-push`
# (zstd-1 + AES-256-GCM into a local directory repository) and `wal-fetch` back.
# Reports the median wall time and CPU (user+sys) of RUNS runs each.
#
# Usage: scripts/bench-archive.sh [RUNS]     (default 9; builds release binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
RUNS=${1:-9}

ensure_postgres
cargo build --release --bins -q
BIN=$PWD/target/release
WORK=$(scratch_dir bench)
trap 'as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# A real segment: pgbench's WAL from a scratch cluster.
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-sync >/dev/null
printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = 54331\n" "$WORK" >> "$WORK/pg/postgresql.conf"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
as_pg "$PG_BIN/pgbench" -h "$WORK" -p 54331 -U postgres -i -s 10 -q postgres >/dev/null 2>&1
as_pg "$PG_BIN/pgbench" -h "$WORK" -p 54331 -U postgres -n -t 2000 -c 2 postgres >/dev/null 2>&1
SEG=$(find "$WORK/pg/pg_wal" -maxdepth 1 -name '0000000100000000000000*' | sort | sed -n 3p)
NAME=$(basename "$SEG")
cp "$SEG" "$WORK/segment"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null
SEG=$WORK/segment

head -c 32 /dev/urandom | base64 > "$WORK/key"
chmod 600 "$WORK/key"
export WALVAULT_REPO="file://$WORK/repo" WALVAULT_KEY_FILE="$WORK/key" WALVAULT_CACHE_DIR="$WORK/cache" WALVAULT_LOG=warn
mkdir -p "$WORK/out" "$WORK/pg_wal"

# measure NAME COMMAND...: appends "wall_s user_s sys_s" of one run to $WORK/NAME.times
# (microsecond resolution from getrusage, unlike /usr/bin/time's centiseconds).
measure() {
    local name=$1; shift
    python3 -c '
import resource, subprocess, sys, time
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "a") as f:
    f.write("%f %f %f\n" % (wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
sys.exit(rc)' "$WORK/$name.times" "$@" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; die "$name failed"; }
}
cp "$SEG" "$WORK/pg_wal/$NAME"
for i in $(seq 1 "$RUNS"); do
    # A new repository per run: the segment keeps its real name (its page header must match).
    export WALVAULT_REPO="file://$WORK/repo$i" WALVAULT_CACHE_DIR="$WORK/cache$i"
    measure cp sh -c "cp '$SEG' '$WORK/out/cp.$i' && sync '$WORK/out/cp.$i'"
    measure zstd_openssl sh -c "zstd -3 -q -c '$SEG' | openssl enc -aes-256-cbc -pbkdf2 -pass file:'$WORK/key' > '$WORK/out/z.$i' && sync '$WORK/out/z.$i'"
    measure wal_push "$BIN/wal-push" "$WORK/pg_wal/$NAME"
    measure wal_fetch "$BIN/wal-fetch" "$NAME" "$WORK/out/fetched.$i"
    cmp -s "$SEG" "$WORK/out/fetched.$i" || die "fetched segment $NAME differs"
done

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf '\nper 16 MiB segment, median of %s runs (%s)\n' "$RUNS" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '%-14s %10s %10s %12s\n' tool "wall ms" "cpu ms" "stored bytes"
for t in cp zstd_openssl wal_push wal_fetch; do
    wall=$(awk '{ print $1 * 1000 }' "$WORK/$t.times" | median)
    cpu=$(awk '{ print ($2 + $3) * 1000 }' "$WORK/$t.times" | median)
    case $t in
        cp) size=$(stat -c %s "$WORK/out/cp.1") ;;
        zstd_openssl) size=$(stat -c %s "$WORK/out/z.1") ;;
        wal_push) size=$(find "$WORK/repo1/wal" -type f -name '*.zst.enc' -printf '%s\n' | head -1) ;;
        *) size=- ;;
    esac
    printf '%-14s %10s %10s %12s\n' "$t" "$wall" "$cpu" "$size"
done
