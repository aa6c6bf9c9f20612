#!/usr/bin/env bash
# The main job: build the example app (examples/simple-html) with the example builder image
# (examples/httpd-builder) through the queue — a local redis-server and one sti-worker, started
# here — then run the image and print what it serves. Everything started here is stopped at exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup-host.sh
setup_host

BUILDER=sti-example/httpd-builder
APP=sti-example/simple-html
PORT=${STI_EXAMPLE_PORT:-18080}
REDIS_PORT=${STI_EXAMPLE_REDIS_PORT:-16399}
RUN_DIR=$(mktemp -d /tmp/sti-example.XXXXXX)
export STI_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"

stop_all() {
    [[ -n "${WORKER_PID:-}" ]] && kill -TERM "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
    [[ -n "${REDIS_PID:-}" ]] && kill -TERM "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    rm -rf "$RUN_DIR"
}
trap stop_all EXIT

log "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN_DIR" \
    >"$RUN_DIR/redis.log" 2>&1 &
REDIS_PID=$!

log "starting one sti-worker (log: $RUN_DIR/worker.log)"
STI_LOG_FORMAT=json .venv/bin/sti-worker --host-id example-host --concurrency 1 --grace 10 \
    >"$RUN_DIR/worker.log" 2>&1 &
WORKER_PID=$!

log "building the builder image $BUILDER from busybox-static"
.venv/bin/python examples/build_builder.py "$BUILDER" >/dev/null

until .venv/bin/sti-submit workers 2>/dev/null | grep -q example-host; do
    kill -0 "$WORKER_PID" 2>/dev/null || { cat "$RUN_DIR/worker.log" >&2; die "sti-worker exited"; }
    sleep 0.5
done

log "sti-submit build examples/simple-html $BUILDER $APP"
.venv/bin/sti-submit build examples/simple-html "$BUILDER" "$APP"

log "running $APP on 127.0.0.1:$PORT"
.venv/bin/python examples/serve_once.py "$APP" "$PORT"
