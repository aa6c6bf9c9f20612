#!/usr/bin/env bash
# Make a Debian bookworm base image (python3, venv, pip, git, redis-server) with debootstrap
# from the apt mirror this machine uses, for hosts with no registry. Usage: [TAG] (cached).
set -euo pipefail

TAG="${1:-sti-local/debian:bookworm}"
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,git,ca-certificates,redis-server
CACHE_DIR="${STI_BASE_CACHE_DIR:-/var/cache/sti}"
# The root file system is cached per tag, suite and package list.
CACHE_KEY="$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)"
CACHE_TAR="$CACHE_DIR/base-$(printf '%s' "$TAG" | tr -c 'A-Za-z0-9._-' '_')-$CACHE_KEY.tar"
STARTED=$SECONDS

log() { printf '==> [%3ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# The first deb URI serving $SUITE, from deb822 .sources files or one-line .list files.
apt_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$file" ]] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (!found && deb && uri != "" && (" " suites " ") ~ (" " suite " ")) {
                    print uri; found = 1; exit
                }
                deb = 0; uri = ""; suites = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            END { flush() }
        ' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$file" ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -E 's/\[[^]]*\]//' "$file" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite {
            print $2
        }'
    done
}

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already exists"
    echo "$TAG"
    exit 0
fi

import_tar() {
    log "importing $1 as $TAG"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE with $PACKAGES" \
        "$1" "$TAG" >/dev/null
    log "image $TAG ready"
    echo "$TAG"
}

if [[ -s "$CACHE_TAR" ]]; then
    log "using the cached root file system $CACHE_TAR"
    import_tar "$CACHE_TAR"
    exit 0
fi

[[ $EUID -eq 0 ]] || die "debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends debootstrap </dev/null >&2 ||
        { apt-get update >&2 && apt-get install -y --no-install-recommends debootstrap </dev/null >&2; }
fi

MIRROR="${STI_DEBIAN_MIRROR:-$(apt_mirror | awk 'NR == 1')}"
[[ -n "$MIRROR" ]] || die "no deb mirror for $SUITE in /etc/apt/sources.list{,.d/*}; set STI_DEBIAN_MIRROR"

ROOTFS="$(mktemp -d /var/tmp/sti-rootfs.XXXXXX)"
cleanup() {
    # Whatever debootstrap left mounted inside (proc, sys), deepest first, then the tree.
    awk -v root="$ROOTFS" 'index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOTFS" "$CACHE_TAR.tmp"
}
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR into $ROOTFS"
# Two stages so that a policy-rc.d is in place before any package's postinst runs: packages
# such as redis-server must not start their daemon (on this host) while being installed.
debootstrap --foreign --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
log "debootstrap second stage"
chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >&2
log "first and second stage done"

chroot "$ROOTFS" apt-get clean
rm -rf "${ROOTFS:?}"/var/lib/apt/lists/* "${ROOTFS:?}"/var/cache/apt/*.bin \
    "${ROOTFS:?}"/var/log/apt/* "${ROOTFS:?}"/var/log/dpkg.log "${ROOTFS:?}"/tmp/*

mkdir -p "$CACHE_DIR"
log "writing $CACHE_TAR"
tar -C "$ROOTFS" --numeric-owner --one-file-system -cf "$CACHE_TAR.tmp" \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' .
mv "$CACHE_TAR.tmp" "$CACHE_TAR"
import_tar "$CACHE_TAR"
