#!/usr/bin/env bash
# The benchmarks, in one run on this machine (ratios against baselines measured beside them):
#   1. per-file cost of one real 16 MiB segment: cp, zstd -3 | openssl, wal-push, wal-fetch
#   2. backlog drain of real WAL (pgbench and OLTP corpora): cp, zstd -1, wal-push,
#      pgBackRest sync and async (installed from Debian when missing)
# Usage: scripts/bench.sh [RUNS] [SEGMENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_postgres
if ! command -v pgbackrest >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null || log "pgBackRest not installed: its rows are skipped"
fi
cargo build --release --bins -q
scripts/bench-archive.sh "${1:-9}"
echo
WALVAULT_BIN=$PWD/target/release PG_BIN=$PG_BIN python3 scripts/bench-drain.py "${2:-48}"
