#!/usr/bin/env bash
# The main job: build the example app (examples/simple-html) with the example builder image
# (examples/httpd-builder), run the image and print what it serves.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup-host.sh
setup_host

BUILDER=sti-example/httpd-builder
APP=sti-example/simple-html
PORT=${STI_EXAMPLE_PORT:-18080}

log "building the builder image $BUILDER from busybox-static"
.venv/bin/python examples/build_builder.py "$BUILDER" >/dev/null

log "sti-submit build examples/simple-html $BUILDER $APP --local"
.venv/bin/sti-submit build examples/simple-html "$BUILDER" "$APP" --local

log "running $APP on 127.0.0.1:$PORT"
.venv/bin/python examples/serve_once.py "$APP" "$PORT"
