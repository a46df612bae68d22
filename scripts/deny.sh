#!/usr/bin/env bash
# The dependency check CI runs: licences, banned and duplicate crates and allowed sources
# (deny.toml), offline. Installs cargo-deny from crates.io when missing. The advisory check
# needs the network: on a connected machine run `cargo deny check advisories`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CARGO_DENY_VERSION=0.20.2

if ! cargo deny --version >/dev/null 2>&1; then
    log "installing cargo-deny $CARGO_DENY_VERSION from crates.io"
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" || die "cannot install cargo-deny"
fi
# cargo metadata reads every package's manifest, other platforms' too: fetch them first
# (crates.io is reachable), then check without the network.
cargo fetch --locked >/dev/null 2>&1 || cargo fetch --locked || die "cargo fetch failed"
cargo deny --offline --workspace check licenses bans sources
