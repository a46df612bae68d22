#!/usr/bin/env bash
# The benchmark harness (issue #7): every stage measures walvault beside its baselines in one
# run on this machine, writes raw JSON into docs/benchmarks/, and the report generator writes
# docs/BENCHMARKS.md (tables, targets met or missed, docs/benchmarks/drain.svg).
#
#   scripts/bench.sh [--quick] [--stages corpora,archive-single,drain,live,restore,basebackup,s3,codec,incremental,rto,scale]
#                    [--segments N] [--no-build]
#   scripts/bench.sh --stages scale   the issue-14 stage, only when named: a pgbench scale-1000
#                    cluster (about 15 GB) backed up, restored, from a standby, and resumed
#
# --quick: few segments and small clusters (a smoke run, about 10 minutes on 2 cores).
# Stages are in scripts/bench/harness.py; the PITR stage is scripts/bench-pitr.sh (set
# BENCH_PITR_SCRIPT to swap in another with the same interface). Installs pgBackRest from
# Debian when missing (as root); the S3 stage needs moto_server (scripts/s3-test-server.sh).
# Everything is bounded by BENCH_TIMEOUT seconds (default 4 h); scratch data is removed.
# Codec micro-benchmarks: cargo bench -p walvault --bench codec [-- --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
args=()
build=true
while [ $# -gt 0 ]; do
    case $1 in
        --quick) args+=(--quick) ;;
        --stages | --segments)
            [ $# -ge 2 ] || usage
            args+=("$1" "$2")
            shift
            ;;
        --stages=* | --segments=*) args+=("$1") ;;
        --no-build) build=false ;;
        -h | --help) usage ;;
        *) log "unknown argument $1"; usage ;;
    esac
    shift
done

ensure_postgres
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}
for tool in pgbackrest zstd openssl curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            log "installing $tool from Debian"
            apt_install "$tool" || log "$tool not installed: the rows that need it are skipped"
        else
            log "$tool missing (run as root to install it from Debian): the rows that need it are skipped"
        fi
    fi
done
command -v moto_server >/dev/null 2>&1 || log "moto_server missing (pip install 'moto[server]'): the s3 stage reports an error"
if [ "$build" = true ]; then
    cargo build --release --bins -q
fi
export WALVAULT_BIN_DIR=$PWD/target/release PG_BIN
rc=0
timeout --foreground "${BENCH_TIMEOUT:-14400}" python3 scripts/bench/harness.py "${args[@]}" || rc=$?
python3 scripts/bench/report.py || rc=$?
exit "$rc"
