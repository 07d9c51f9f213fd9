#!/usr/bin/env bash
#
# Runs Nchan (nginx + Debian's libnginx-mod-nchan) with Redis storage on 127.0.0.1, for the
# benchmarks' comparison runs. Renders bench/nchan/nginx.conf.template into a directory and
# execs nginx in the foreground, so this script's pid becomes the nginx master's.
#
#   bench/nchan/run.sh [--port 8190] [--workers 1] [--redis HOST:PORT | --redis-port PORT]
#                      [--dir DIR] [--buffer-length 10000] [--message-timeout 24h]
#                      [--ping-interval 15] [--nofile 20000] [--worker-connections N]
#                      [--shared-memory 256M] [--log-level warn] [--keep]
#
#   --port                nginx listens on 127.0.0.1:PORT (default: first free from 8190)
#   --workers             worker_processes (a number or "auto"; default 1)
#   --redis HOST:PORT     use this (existing) Redis; nothing is started for it
#   --redis-port PORT     start a private redis-server on PORT (default: first free from 6490),
#                         data in a temp dir, no RDB, no AOF; stopped when nginx exits
#   --dir DIR             prefix directory for nginx.conf, nginx.pid, logs/, temp/
#                         (default: a new temp dir)
#   --buffer-length N     nchan_message_buffer_length: messages kept per channel
#   --message-timeout T   nchan_message_timeout: how long a message is kept (0 = forever)
#   --ping-interval S     a ": ping" comment on every stream each S seconds (0 = off)
#   --nofile N            worker_rlimit_nofile (this machine's hard limit is 20000)
#   --worker-connections  per worker (default: nofile - 100)
#   --keep                keep the temp dirs (logs) after nginx exits
#
# Stop it with SIGTERM (fast shutdown) or SIGQUIT (graceful) to the printed nginx pid; the
# workers exit with the master, then the private Redis is shut down and the temp dirs
# removed. Endpoints (see bench/nchan/README.md):
#
#   publish:   POST http://127.0.0.1:PORT/pub?id=<channel>   (or /pub/<channel>), body = message
#   subscribe: GET  http://127.0.0.1:PORT/sub/<channel>      Accept: text/event-stream
#                                                            [Last-Event-ID: <id>]

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$here/../../scripts/lib.sh"

# Prints the first port from $1 upwards that nothing on 127.0.0.1 answers on.
free_port() {
    local port="$1"
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

usage() {
    sed -n '3,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

port=""
workers=1
redis_addr=""
redis_port=""
prefix_dir=""
buffer_length=10000
message_timeout=24h
ping_interval=15
nofile=20000
worker_connections=""
shared_memory=256M
log_level=warn
keep=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --redis) redis_addr="$2"; shift 2 ;;
        --redis-port) redis_port="$2"; shift 2 ;;
        --dir) prefix_dir="$2"; shift 2 ;;
        --buffer-length) buffer_length="$2"; shift 2 ;;
        --message-timeout) message_timeout="$2"; shift 2 ;;
        --ping-interval) ping_interval="$2"; shift 2 ;;
        --nofile) nofile="$2"; shift 2 ;;
        --worker-connections) worker_connections="$2"; shift 2 ;;
        --shared-memory) shared_memory="$2"; shift 2 ;;
        --log-level) log_level="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
[[ -n "$redis_addr" && -n "$redis_port" ]] && fail "give --redis or --redis-port, not both"
worker_connections="${worker_connections:-$((nofile - 100))}"

ensure_nchan
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

# Directories this run creates, removed after nginx exits unless --keep.
created_dirs=()
if [[ -z "$prefix_dir" ]]; then
    prefix_dir="$(mktemp -d -t nchan-bench.XXXXXX)"
    created_dirs+=("$prefix_dir")
fi
prefix_dir="$(cd "$prefix_dir" && pwd)"
mkdir -p "$prefix_dir/logs" "$prefix_dir/temp"
# Started as root, the workers run as nobody: they must reach temp/ (nginx creates and
# chowns the directories inside it).
chmod 755 "$prefix_dir" "$prefix_dir/temp"

port="${port:-$(free_port 8190)}"

redis_pid=""
if [[ -z "$redis_addr" ]]; then
    ensure_redis
    redis_bin="${REDIS_SERVER_BIN:-$(command -v redis-server || echo /usr/bin/redis-server)}"
    redis_port="${redis_port:-$(free_port 6490)}"
    redis_dir="$(mktemp -d -t nchan-bench-redis.XXXXXX)"
    created_dirs+=("$redis_dir")
    "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" \
        --save "" --appendonly no --maxclients 10000 \
        --logfile "$redis_dir/redis.log" --daemonize no &
    redis_pid=$!
    redis_addr="127.0.0.1:$redis_port"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
        kill -0 "$redis_pid" 2>/dev/null || fail "redis-server exited; see $redis_dir/redis.log"
        sleep 0.1
    done
fi

sed -e "s|{{PREFIX_DIR}}|$prefix_dir|g" \
    -e "s|{{PORT}}|$port|g" \
    -e "s|{{REDIS_HOST_PORT}}|$redis_addr|g" \
    -e "s|{{WORKERS}}|$workers|g" \
    -e "s|{{NOFILE}}|$nofile|g" \
    -e "s|{{WORKER_CONNECTIONS}}|$worker_connections|g" \
    -e "s|{{BUFFER_LENGTH}}|$buffer_length|g" \
    -e "s|{{MESSAGE_TIMEOUT}}|$message_timeout|g" \
    -e "s|{{PING_INTERVAL}}|$ping_interval|g" \
    -e "s|{{SHARED_MEMORY}}|$shared_memory|g" \
    -e "s|{{LOG_LEVEL}}|$log_level|g" \
    -e "s|{{NCHAN_MODULE}}|$STREAMGATE_NCHAN_MODULE|g" \
    "$here/nginx.conf.template" >"$prefix_dir/nginx.conf"
if grep -q '{{' "$prefix_dir/nginx.conf"; then
    fail "placeholders left in $prefix_dir/nginx.conf: $(grep -o '{{[A-Z_]*}}' "$prefix_dir/nginx.conf" | sort -u | tr '\n' ' ')"
fi
if ! check_output="$("$nginx_bin" -t -p "$prefix_dir" -c "$prefix_dir/nginx.conf" 2>&1)"; then
    printf '%s\n' "$check_output" >&2
    fail "nginx rejected $prefix_dir/nginx.conf"
fi

# After the exec below this shell's pid is the nginx master's. A detached watcher stops
# the private Redis and removes the temp dirs once it is gone.
master_pid=$$
if [[ -n "$redis_pid" || ( ${#created_dirs[@]} -gt 0 && -z "$keep" ) ]]; then
    (
        trap '' INT TERM HUP
        # Gone, or a zombie its parent has not reaped yet.
        while kill -0 "$master_pid" 2>/dev/null &&
            [[ "$(sed 's/.*) //' "/proc/$master_pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]]; do
            sleep 0.5
        done
        if [[ -n "$redis_pid" ]]; then
            kill "$redis_pid" 2>/dev/null || true
            while kill -0 "$redis_pid" 2>/dev/null; do sleep 0.1; done
        fi
        [[ -z "$keep" ]] && rm -rf "${created_dirs[@]}"
    ) </dev/null >/dev/null 2>&1 &
    disown
fi

cat <<EOF
nchan: nginx $("$nginx_bin" -v 2>&1 | sed 's|.*/||'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan), pid $master_pid, $workers worker(s)
nchan: publish    POST http://127.0.0.1:$port/pub?id={channel}   (or /pub/{channel}); body = message
nchan: subscribe  GET  http://127.0.0.1:$port/sub/{channel}   Accept: text/event-stream [Last-Event-ID: <id>]
nchan: status     GET  http://127.0.0.1:$port/nchan_status
nchan: redis      $redis_addr$([[ -n "$redis_pid" ]] && echo " (private, pid $redis_pid, no persistence)")
nchan: prefix     $prefix_dir (nginx.conf, nginx.pid, logs/error.log)
EOF
exec "$nginx_bin" -p "$prefix_dir" -c "$prefix_dir/nginx.conf"
