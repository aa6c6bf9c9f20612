#!/usr/bin/env bash
# The main job: set up this machine, start a local redis-server and one sti-worker in the
# background, build examples/simple-html with the example builder through the queue, run the
# image and print what it serves. `bash examples/run.sh stop` stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILDER=sti-example/httpd-builder
APP=sti-example/simple-html
PORT=${STI_EXAMPLE_PORT:-18080}
REDIS_PORT=${STI_EXAMPLE_REDIS_PORT:-16399}
RUN_DIR=.run/example
export STI_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"

log() { printf '==> %s\n' "$*" >&2; }

running() { [[ -f "$RUN_DIR/$1.pid" ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

stop_one() {
    if running "$1"; then
        local pid
        pid=$(cat "$RUN_DIR/$1.pid")
        log "stopping $1 (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN_DIR/$1.pid"
}

if [[ "${1:-}" == "stop" ]]; then
    stop_one worker
    stop_one redis
    rm -rf "$RUN_DIR"
    exit 0
fi

source scripts/setup-host.sh
setup_host
mkdir -p "$RUN_DIR/redis"

if ! running redis; then
    log "starting redis-server on 127.0.0.1:$REDIS_PORT (AOF on, no eviction)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes \
        --maxmemory-policy noeviction --dir "$PWD/$RUN_DIR/redis" \
        >"$RUN_DIR/redis.log" 2>&1 &
    echo $! >"$RUN_DIR/redis.pid"
fi
if ! running worker; then
    log "starting one sti-worker in the background (log: $RUN_DIR/worker.log)"
    STI_LOG_FORMAT=json setsid .venv/bin/sti-worker --host-id example-host --concurrency 1 \
        >"$RUN_DIR/worker.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/worker.pid"
fi

log "building the builder image $BUILDER from busybox-static"
.venv/bin/python examples/build_builder.py "$BUILDER" >/dev/null

for _ in $(seq 1 120); do
    .venv/bin/sti-submit workers 2>/dev/null | grep -q '^example-host' && break
    running worker || { cat "$RUN_DIR/worker.log" >&2; die "sti-worker exited"; }
    sleep 0.5
done

log "sti-submit build examples/simple-html $BUILDER $APP"
.venv/bin/sti-submit build examples/simple-html "$BUILDER" "$APP"

log "running $APP on 127.0.0.1:$PORT"
.venv/bin/python examples/serve_once.py "$APP" "$PORT"
log "redis-server and sti-worker keep running; stop them with: bash examples/run.sh stop"
