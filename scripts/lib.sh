#!/usr/bin/env bash
# Shared helpers for walvault's scripts: sourced, never run.
# shellcheck disable=SC2034

# PostgreSQL binaries: PG_BIN, else Debian's PostgreSQL 15.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run a command as the postgres OS user when we are root (PostgreSQL refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Install PostgreSQL server binaries from Debian when they are missing.
ensure_postgres() {
    if [ ! -x "$PG_BIN/initdb" ]; then
        log "installing PostgreSQL 15 server from Debian"
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 >/dev/null \
                || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 >/dev/null; } \
                || die "cannot install postgresql-15"
        else
            die "$PG_BIN/initdb not found: install postgresql-15 (apt-get install postgresql-15)"
        fi
    fi
    id postgres >/dev/null 2>&1 || die "no postgres OS user: install postgresql-15"
}

# A scratch directory the postgres user may use.
scratch_dir() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/walvault-$1.XXXXXX")
    chmod 755 "$d"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$d"; fi
    printf '%s\n' "$d"
}
