#!/usr/bin/env bash
# The test command (README and .ci/run call exactly this). On a fresh machine it installs
# what the tests need -- PostgreSQL 15 server binaries from Debian, moto's S3 server from
# PyPI -- starts the S3 test server on 127.0.0.1, runs every test, and stops the server.
#
# Usage: scripts/test.sh [extra cargo nextest / cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

MOTO_VERSION=5.2.1

ensure_postgres
if ! command -v moto_server >/dev/null 2>&1; then
    log "installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m pip install -q "moto[server]==$MOTO_VERSION" || die "cannot install moto"
    hash -r
fi

STATE=$(mktemp -d "${TMPDIR:-/tmp}/walvault-s3.XXXXXX")
scripts/s3-test-server.sh start "$STATE"
trap 'scripts/s3-test-server.sh stop "$STATE"; rm -rf "$STATE"' EXIT
WALVAULT_TEST_S3_ENDPOINT="http://127.0.0.1:$(cat "$STATE/port")"
export WALVAULT_TEST_S3_ENDPOINT
log "S3 test server at $WALVAULT_TEST_S3_ENDPOINT"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
