#!/usr/bin/env bash
# Make this machine able to run sti: Debian packages, a Docker daemon, the project in .venv.
# Idempotent; sourced by .ci/run and examples/run.sh, or run on its own as root.
set -euo pipefail

DEBIAN_PACKAGES=(docker.io redis-server busybox-static git docker-registry docker-compose debootstrap)
DOCKERD_LOG=/tmp/sti-dockerd.log
DOCKERD_WAIT_SECONDS=60

docker_up() { timeout 10 docker info >/dev/null 2>&1; }

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

install_packages() {
    local missing=() pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    # python3 may be absent on a minimal system; the venv module is a separate package.
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]} == 0)); then
        log "Debian packages already installed"
        return
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
}

start_dockerd() {
    if docker_up; then
        log "Docker daemon is running"
        return
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found (package docker.io)"
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$! started=$SECONDS
    until docker_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 50 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during startup; see $DOCKERD_LOG"
        fi
        if ((SECONDS - started >= DOCKERD_WAIT_SECONDS)); then
            tail -n 50 "$DOCKERD_LOG" >&2 || true
            die "Docker daemon did not come up within ${DOCKERD_WAIT_SECONDS}s; see $DOCKERD_LOG"
        fi
        sleep 1
    done
    log "Docker daemon is up after $((SECONDS - started))s"
}

install_project() {
    if [[ ! -x .venv/bin/python ]]; then
        log "creating virtualenv .venv"
        python3 -m venv .venv
    fi
    log "installing the project into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[dev]'
}

setup_host() {
    install_packages
    start_dockerd
    install_project
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    setup_host
fi
