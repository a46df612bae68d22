#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a bounded time each (default 60 s), starting from
# the committed seed corpus in fuzz/corpus/<target>. New inputs go to a scratch directory, so
# the committed corpus stays small; a crash is saved under fuzz/artifacts/<target>/ and fails
# the script. Installs cargo-fuzz from crates.io when missing.
#
# The stable toolchain runs cargo-fuzz with RUSTC_BOOTSTRAP=1 (it passes -Z flags for the
# sanitizer-coverage instrumentation). Targets run without a sanitizer by default: walvault
# forbids unsafe code; FUZZ_SANITIZER=address checks the C in zstd and ring as well (slower).
#
# Usage: scripts/fuzz.sh [seconds per target] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${1:-60}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" || die "cannot install cargo-fuzz"
fi
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
sanitizer=${FUZZ_SANITIZER:-none}
log "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" || die "fuzz targets do not build"

work=$(mktemp -d "${TMPDIR:-/tmp}/walvault-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "fuzz/artifacts/$t"
    log "fuzzing $t for ${SECONDS_PER_TARGET}s"
    if ! cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
        -print_final_stats=1 >"$work/$t.log" 2>&1; then
        tail -n 40 "$work/$t.log" >&2
        die "fuzz target $t failed: see the crash input in fuzz/artifacts/$t/"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n 1 | grep -o '[0-9]*' || echo "?")
    summary+=("$t: $runs runs, coverage $cov, $(find "$work/$t" -type f | wc -l) new inputs, no crash")
done
printf 'fuzz: %s\n' "${summary[@]}"
