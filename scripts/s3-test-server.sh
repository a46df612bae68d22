#!/usr/bin/env bash
# Start or stop a moto S3 server on a free loopback port, for the storage tests.
#
#   scripts/s3-test-server.sh start PORT_FILE   # prints http://127.0.0.1:PORT
#   scripts/s3-test-server.sh stop PORT_FILE
#
# start writes the port to PORT_FILE, the PID to PORT_FILE.pid and the server log to
# PORT_FILE.log, and returns once the server answers. stop kills that PID.
# Needs moto_server (pip install "moto[server]"), python3 and curl.
set -euo pipefail

usage() { echo "usage: $0 start|stop PORT_FILE" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1 port_file=$2 pid_file=$2.pid log_file=$2.log

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    command -v moto_server >/dev/null || { echo "moto_server not found: pip install 'moto[server]'" >&2; exit 1; }
    local port pid _
    for _ in 1 2 3; do  # the free port may be taken before moto binds it: try again
        port=$(free_port)
        nohup moto_server -H 127.0.0.1 -p "$port" </dev/null >"$log_file" 2>&1 &
        pid=$!
        for _ in $(seq 150); do  # up to ~30 s
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
                echo "$pid" >"$pid_file"
                echo "$port" >"$port_file"
                echo "http://127.0.0.1:$port"
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill "$pid" 2>/dev/null || true
    done
    echo "moto_server did not start; log: $log_file" >&2
    tail -n 20 "$log_file" >&2 || true
    exit 1
}

stop() {
    [[ -f $pid_file ]] || { echo "no $pid_file: nothing to stop" >&2; return 0; }
    local pid
    pid=$(<"$pid_file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file" "$port_file"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
