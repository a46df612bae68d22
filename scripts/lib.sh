#!/usr/bin/env bash
# Shared helpers for walvault's scripts: sourced, never run.
# shellcheck disable=SC2034

WALVAULT_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# PostgreSQL server binaries: PG_BIN, else Debian's PostgreSQL 15, else the pg_ctl on PATH
# (official postgres images). The restore scripts pick the restored cluster's own major
# version under /usr/lib/postgresql when PG_BIN is not given.
PG_BIN_GIVEN=${PG_BIN:+1}
if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=/usr/lib/postgresql/15/bin
    if [ ! -x "$PG_BIN/pg_ctl" ] && command -v pg_ctl >/dev/null 2>&1; then
        PG_BIN=$(dirname "$(command -v pg_ctl)")
    fi
fi

# One log line on stderr: UTC timestamp, script, message. Never a secret.
log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2; }
# Stop with an exit code of the suite (1 not found, 2 config, 3 storage, 4 corrupt/key,
# 5 refused, 6 io, 7 postgres).
fail() { local code=$1; shift; log "error: $*"; exit "$code"; }
die() { fail 1 "$@"; }

# Time-stamp each line of a program's stderr (the binaries log one line per event).
stamp_lines() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line" >&2
    done
}

# What a walvault exit code means.
exit_meaning() {
    case $1 in
        0) echo "ok" ;;
        1) echo "not found" ;;
        2) echo "configuration or bad input" ;;
        3) echo "storage unavailable" ;;
        4) echo "corrupt object or wrong key" ;;
        5) echo "refused" ;;
        6) echo "local I/O error" ;;
        7) echo "PostgreSQL error" ;;
        *) echo "unexpected failure" ;;
    esac
}

# Seconds since the epoch with microseconds (bash 5), and B - A with one decimal.
now() { printf '%s\n' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# 123456789 -> "117.7 MiB".
human_bytes() {
    awk -v n="$1" 'BEGIN {
        split("B KiB MiB GiB TiB", u, " "); i = 1
        while (n >= 1024 && i < 5) { n /= 1024; i++ }
        if (i == 1) printf "%d B", n; else printf "%.1f %s", n, u[i] }'
}

# A field of the pretty JSON our binaries print: json_field FILE KEY [INDENT]. The indent
# tells the level (two spaces: top level, four: one object down), so a part's "bytes" is
# never taken for the backup's.
json_field() {
    local indent=${3:-  }
    sed -nE "s/^${indent}\"$2\": \"?([^\",]*)\"?,?\$/\\1/p" "$1" | head -n 1
}

# A boolean knob: true or false, else a configuration error.
bool_knob() {
    local name=$1 default=$2 value
    value=${!name:-$default}
    case $value in
        true | false) printf '%s\n' "$value" ;;
        *) fail 2 "$name=$value: expected true or false" ;;
    esac
}

# Path of one of walvault's binaries: $WALVAULT_BIN_DIR/NAME, else target/release/NAME
# beside these scripts (a source checkout), else NAME on PATH (an image).
walvault_bin() {
    local name=$1 dir
    if [ -n "${WALVAULT_BIN_DIR:-}" ]; then
        [ -x "$WALVAULT_BIN_DIR/$name" ] || fail 2 "WALVAULT_BIN_DIR=$WALVAULT_BIN_DIR holds no executable $name"
        printf '%s\n' "$WALVAULT_BIN_DIR/$name"
        return
    fi
    dir=$WALVAULT_SCRIPTS_DIR/../target/release
    if [ -x "$dir/$name" ]; then
        printf '%s\n' "$(cd "$dir" && pwd)/$name"
        return
    fi
    command -v "$name" || fail 2 "$name not found: set WALVAULT_BIN_DIR to the directory of walvault's binaries, or put them on PATH"
}

# --config FILE for the scripts: the binaries (and the restored server's restore_command)
# read it through WALVAULT_CONFIG.
use_config_file() {
    [ -r "$1" ] || fail 2 "--config $1: not a readable file"
    WALVAULT_CONFIG=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
    export WALVAULT_CONFIG
}

# Run a command as the postgres OS user when we are root (PostgreSQL refuses root). The
# environment (repository settings, key) goes along: the server's wal-fetch needs it.
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

# ---------------------------------------------------------------------------------------
# Restore (runbook Procedures 1 and 2): restore-postgresql.sh and postgresql-pitr-restore.sh
# both end in restore_main.

# Ask before a restore. SKIP_CONFIRMATION=true goes on; otherwise a person types yes on a
# terminal. With stdin not a terminal (a Job, a pipe) it refuses: nothing is written.
confirm_restore() {
    local answer=""
    [ "${SKIP_CONFIRMATION:-false}" = true ] && return 0
    if [ ! -t 0 ]; then
        fail 5 "refusing to restore without confirmation: stdin is not a terminal (set SKIP_CONFIRMATION=true in a restore Job); nothing was written"
    fi
    printf '%s\nType yes to continue: ' "$1" >&2
    read -r answer || true
    [ "$answer" = yes ] || fail 5 "not confirmed: nothing was written"
}

# A backup name as `walvault list` shows it; latest (and the runbook's latest.sql.gz.enc)
# means the newest complete backup. Names with the runbook's old suffixes are accepted.
backup_name() {
    local b=${1:-latest}
    case $b in
        latest | latest.*) echo latest ;;
        *)
            b=${b%_metadata.json}
            b=${b%.sql.gz.enc}
            printf '%s\n' "${b%/}"
            ;;
    esac
}

RESTORE_WORK=""
RESTORE_PGDATA=""
RESTORE_STARTED=false
RESTORE_KEEP=false

restore_cleanup() {
    local rc=$?
    if [ "$RESTORE_STARTED" = true ] && { [ "$rc" != 0 ] || [ "$RESTORE_KEEP" != true ]; }; then
        log "stopping the restored server (pg_ctl -m fast stop)"
        as_pg "$PG_BIN/pg_ctl" -D "$RESTORE_PGDATA" -m fast -w -t 300 stop >/dev/null 2>&1 || true
    fi
    # Kept only when it holds something to read: the log of a server that ran (a failed
    # recovery), or the running server's socket (KEEP_RUNNING=true). A failure before the
    # server started printed all there is (pitr-prepare's lines above).
    if [ -n "$RESTORE_WORK" ]; then
        if [ "$RESTORE_KEEP" = true ] && [ "$rc" = 0 ]; then
            log "socket directory of the running server: $RESTORE_WORK"
        elif [ "$rc" != 0 ] && [ -s "$RESTORE_WORK/postgresql.log" ]; then
            log "server log kept in $RESTORE_WORK"
        else
            rm -rf "$RESTORE_WORK"
        fi
    fi
    exit "$rc"
}

# The restored server's lines that say where recovery ended.
recovery_log_lines() {
    grep -E 'recovery stopping|last completed transaction|selected new timeline ID|redo done at|archive recovery complete' "$1" 2>/dev/null \
        | sed -E 's/^.*(LOG|INFO): +//; s/ system usage: .*//' || true
}

# An LSN (16/B374D848) as a number, to compare two.
lsn_number() { printf '%d\n' "$(( (16#${1%/*} << 32) + 16#${1#*/} ))"; }

# The report's line for ARCHIVE.
archive_desc() {
    case $1 in
        on) echo "on: the restored server archives into the repository (it replaces production)" ;;
        *) echo "off: archive_mode = 'off', nothing is written into the repository (ARCHIVE=on to replace production)" ;;
    esac
}

# restore_main BACKUP_DESC TARGET_DESC PITR_PREPARE_ARGS...
#
# Environment: PGDATA (required), SKIP_CONFIRMATION, FORCE, DELTA, START_SERVER (default true),
# PG_START_TIMEOUT (default 3600 s), VERIFY_SQL, KEEP_RUNNING (default false), ARCHIVE
# (on|off, default off), TARGET_TIMELINE (latest|current|N), PG_BIN, WALVAULT_BIN_DIR, and
# the repository settings of every binary.
#
# Confirms, runs pitr-prepare, then (START_SERVER=true) starts PostgreSQL on a private
# socket only, waits until recovery has ended and the server is promoted, runs VERIFY_SQL,
# stops the server again (unless KEEP_RUNNING=true) and prints a report on stdout.
# Exit: pitr-prepare's code when it fails or refuses, 5 when not confirmed, 7 when the
# server does not recover or recovery to the end stopped short of what the archive holds.
restore_main() {
    local backup_desc=$1 target_desc=$2
    shift 2
    local pgdata=${PGDATA:-} force delta start keep timeout prepare
    [ -n "$pgdata" ] || fail 2 "PGDATA is not set: the data directory to restore into"
    case $pgdata in /*) ;; *) pgdata=$PWD/$pgdata ;; esac
    pgdata=${pgdata%/}
    force=$(bool_knob FORCE false)
    delta=$(bool_knob DELTA false)
    if [ "$force" = true ] && [ "$delta" = true ]; then
        fail 2 "FORCE=true and DELTA=true: choose one (DELTA keeps what matches the backup, FORCE deletes everything first)"
    fi
    start=$(bool_knob START_SERVER true)
    keep=$(bool_knob KEEP_RUNNING false)
    timeout=${PG_START_TIMEOUT:-3600}
    case $timeout in '' | *[!0-9]*) fail 2 "PG_START_TIMEOUT=$timeout: expected seconds" ;; esac
    local verify_sql=${VERIFY_SQL:-SELECT count(*) FROM pg_class}
    prepare=$(walvault_bin pitr-prepare)
    local args=("$@") archive=${ARCHIVE:-off}
    [ "$force" = true ] && args+=(--force)
    [ "$delta" = true ] && args+=(--delta)
    case $archive in
        on | off) args+=(--archive "$archive") ;;
        *) fail 2 "ARCHIVE=$archive: expected on (the restored server replaces production and archives) or off" ;;
    esac
    [ -n "${TARGET_TIMELINE:-}" ] && args+=(--target-timeline "$TARGET_TIMELINE")

    local what="About to restore backup $backup_desc into PGDATA=$pgdata and recover to $target_desc."
    [ "$force" = true ] && what="$what FORCE=true: everything in $pgdata is deleted first."
    [ "$delta" = true ] && what="$what DELTA=true: files of $pgdata that differ from the backup are replaced, the others deleted."
    confirm_restore "$what"

    RESTORE_PGDATA=$pgdata
    RESTORE_KEEP=$keep
    RESTORE_WORK=$(scratch_dir restore)
    trap restore_cleanup EXIT
    local out=$RESTORE_WORK/pitr-prepare.json rc=0 t0 t1
    log "restoring into $pgdata; backup: $backup_desc; recovery target: $target_desc"
    log "running pitr-prepare ${args[*]}"
    t0=$(now)
    set +e
    # pitr-prepare's hints name its flags; here the person sets the script's knob instead.
    "$prepare" --json --pgdata "$pgdata" "${args[@]}" 2>&1 >"$out" | sed -u 's/add --force/set FORCE=true/g' | stamp_lines
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" != 0 ]; then
        fail "$rc" "pitr-prepare failed with exit code $rc ($(exit_meaning "$rc")); the server was not started"
    fi
    local name files bytes secs lsn segment tli next must_reach
    name=$(json_field "$out" backup)
    files=$(json_field "$out" files)
    bytes=$(json_field "$out" bytes)
    secs=$(json_field "$out" seconds)
    lsn=$(json_field "$out" last_lsn '    ')
    segment=$(json_field "$out" last_segment '    ')
    tli=$(json_field "$out" timeline '    ')
    next=$(json_field "$out" next_command)
    must_reach=$(json_field "$out" must_reach)
    secs=$(awk -v s="$secs" 'BEGIN { printf "%.1f", s }')
    log "pitr-prepare restored $name ($files files, $(human_bytes "$bytes")) in $secs s; the archive reaches $lsn (timeline $tli)"
    local delta_line=
    if [ "$delta" = true ]; then
        delta_line=$(printf '  delta               %s kept, %s fetched, %s removed\n' \
            "$(human_bytes "$(json_field "$out" kept_bytes '    ')")" "$(human_bytes "$(json_field "$out" fetched_bytes '    ')")" \
            "$(human_bytes "$(json_field "$out" removed_bytes '    ')")")
    fi

    # pitr-prepare run as root gives PGDATA to the owner of its parent; a parent owned by
    # root (PGDATA is a mount point under /) leaves it to root, which PostgreSQL refuses.
    if [ "$(id -u)" = 0 ] && [ "$(stat -c %u "$pgdata")" = 0 ] && id postgres >/dev/null 2>&1; then
        log "giving $pgdata to the postgres user"
        chown -R postgres:postgres "$pgdata"
    fi
    if [ -z "${PG_BIN_GIVEN:-}" ] && [ -r "$pgdata/PG_VERSION" ]; then
        local ver
        ver=$(cat "$pgdata/PG_VERSION")
        if [ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" ]; then PG_BIN=/usr/lib/postgresql/$ver/bin; fi
    fi

    local report_head
    report_head=$(printf 'walvault restore report (%s)\n  backup restored     %s (%s files, %s)\n  recovery target     %s\n  archive reaches     %s (segment %s, timeline %s)\n  archiving           %s\n  pitr-prepare        %s s\n%s' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$name" "$files" "$(human_bytes "$bytes")" "$target_desc" "$lsn" "$segment" "$tli" \
        "$(archive_desc "$archive")" "$secs" "$delta_line")
    if [ "$start" != true ]; then
        printf '\n%s\n  server              not started (START_SERVER=false); to recover, as the postgres user run:\n' "$report_head"
        printf '                      %s/%s\n' "$PG_BIN" "$next"
        return 0
    fi

    [ -x "$PG_BIN/pg_ctl" ] || fail 7 "no PostgreSQL server binaries at $PG_BIN (pg_ctl): set PG_BIN"
    # A private socket and no TCP: nothing but this script talks to the server until it is
    # verified. With ARCHIVE=on archiving stays as the restored postgresql.conf says (the new
    # timeline's history file must reach the archive); with off pitr-prepare wrote
    # archive_mode = 'off'.
    local port=${PGPORT:-5432} logf=$RESTORE_WORK/postgresql.log
    log "starting PostgreSQL ($PG_BIN/pg_ctl) to replay WAL through wal-fetch; log: $logf"
    as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$logf" -W \
        -o "-c listen_addresses='' -c unix_socket_directories='$RESTORE_WORK' -c port=$port -c logging_collector=off" \
        start >/dev/null || fail 7 "pg_ctl start failed: $(tail -n 5 "$logf" 2>/dev/null)"
    RESTORE_STARTED=true

    # Promoted = recovery.signal is gone (the server removes it when recovery ends) and the
    # control file says "in production" (the copy restored from the backup says so from the
    # start). Neither needs a login. A server that exits on the way (wal-fetch failed, bad
    # target) is noticed within a second.
    local deadline=$((SECONDS + timeout)) state down=0 last_report=$SECONDS
    while :; do
        state=$(as_pg "$PG_BIN/pg_controldata" -D "$pgdata" 2>/dev/null | sed -n 's/^Database cluster state: *//p')
        if [ ! -e "$pgdata/recovery.signal" ] && [ "$state" = "in production" ]; then break; fi
        if as_pg "$PG_BIN/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
            down=0
        else
            down=$((down + 1))
            if [ "$down" -ge 5 ]; then
                RESTORE_STARTED=false
                tail -n 20 "$logf" >&2 || true
                fail 7 "PostgreSQL stopped during recovery (state: ${state:-unknown}); see the log above"
            fi
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail 7 "recovery did not finish within PG_START_TIMEOUT=${timeout}s (state: $state); the data directory still holds recovery.signal: a new start resumes recovery"
        fi
        if [ $((SECONDS - last_report)) -ge 30 ]; then
            log "still recovering (state: $state, $((SECONDS - deadline + timeout)) s)"
            last_report=$SECONDS
        fi
        sleep 0.2
    done
    t1=$(now)
    log "recovery ended: the server is promoted ($(elapsed "$t0" "$t1") s after pitr-prepare started)"

    local psql=(as_pg "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$RESTORE_WORK" -p "$port"
        -U "${VERIFY_USER:-${PGUSER:-postgres}}" -d "${VERIFY_DB:-${PGDATABASE:-postgres}}")
    local tries=0
    until [ "$("${psql[@]}" -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 150 ] || fail 7 "cannot query the restored server: $("${psql[@]}" -c 'SELECT 1' 2>&1 | tail -n 1)"
        sleep 0.2
    done
    local replayed timeline result
    replayed=$("${psql[@]}" -c 'SELECT pg_last_wal_replay_lsn()') || fail 7 "cannot query the restored server"
    timeline=$("${psql[@]}" -c 'SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)') || fail 7 "cannot query the restored server"
    if [ -n "$must_reach" ] && [ "$must_reach" != null ] && [ "$(lsn_number "$replayed")" -le "$(lsn_number "$must_reach")" ]; then
        fail 7 "recovery ended at $replayed, short of what the archive holds on timeline $tli (WAL to $lsn, segment $segment): $pgdata holds a promoted server without the transactions after $replayed; do not start it as production (see the server log in $RESTORE_WORK)"
    fi
    log "verifying: $verify_sql"
    result=$("${psql[@]}" -c "$verify_sql" 2>"$RESTORE_WORK/verify.err") \
        || fail 7 "verification query failed: $(cat "$RESTORE_WORK/verify.err")"

    local server
    if [ "$keep" = true ]; then
        server="running (KEEP_RUNNING=true) on socket $RESTORE_WORK port $port; stop it with: $PG_BIN/pg_ctl -D $pgdata stop"
    else
        log "stopping the restored server (fast shutdown): PGDATA is ready for the database's own server"
        as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 300 stop >/dev/null || fail 7 "pg_ctl stop failed"
        RESTORE_STARTED=false
        server="stopped after verification; $pgdata is promoted and ready to start"
    fi

    printf '\n%s\n' "$report_head"
    printf '  WAL reached         %s (new timeline %d)\n' "$replayed" "$((16#$timeline))"
    recovery_log_lines "$logf" | sed 's/^/  recovery log        /'
    printf '  time to recover     %s s (start of pitr-prepare to promoted)\n' "$(elapsed "$t0" "$t1")"
    printf '  verification        %s\n' "$verify_sql"
    printf '%s\n' "$result" | sed 's/^/  verification result /'
    printf '  server              %s\n' "$server"
}
