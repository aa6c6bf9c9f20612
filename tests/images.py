"""Fixture builder images for the tests, modelled on the original Go sti tool's test images.

Plain functions (no pytest fixtures): each builds one image offline with busybox-static.
"""

from __future__ import annotations

from collections.abc import Callable

import docker

from examples.busybox_images import build_busybox_image

# Like the busybox base image the Go sti test images were built on.
_CMD_SH = 'CMD ["/bin/sh"]'

PREPARE = """\
#!/bin/sh
set -e
echo "prepare: building"
mkdir -p /sti-fake/src
env > /sti-fake/env
cp -R /tmp/src/. /sti-fake/src/
touch /sti-fake/prepare-invoked
if [ -f /tmp/artifacts/save-artifacts-invoked ]; then
    echo "prepare: found artifacts from a previous build"
    touch /sti-fake/save-artifacts-invoked
fi
echo "prepare: done"
"""

RUN = """\
#!/bin/sh
set -e
mkdir -p /sti-fake
touch /sti-fake/run-invoked
echo "run: invoked"
exit 0
"""

SAVE_ARTIFACTS = """\
#!/bin/sh
set -e
mkdir -p /tmp/artifacts
touch /tmp/artifacts/save-artifacts-invoked
"""

BUILDER_PREPARE = """\
#!/bin/sh
set -e
echo "prepare: building (builder)"
mkdir -p /sti-fake /tmp/build
env > /sti-fake/env
cp -R /tmp/src/. /tmp/build/
touch /sti-fake/prepare-invoked
if [ -f /tmp/artifacts/save-artifacts-invoked ]; then
    echo "prepare: found artifacts from a previous build"
    touch /tmp/build/save-artifacts-invoked
    touch /tmp/build/.sti-fake-builder-saw-artifacts
fi
echo "prepare: done"
"""

FAILING_PREPARE = """\
#!/bin/sh
set -e
echo "prepare: about to fail"
exit 3
"""

ENV_PREPARE = """\
#!/bin/sh
set -e
echo "prepare: recording FOO, BAR and BAZ"
mkdir -p /sti-fake
env > /sti-fake/env
printf '%s' "$FOO" > /sti-fake/FOO
printf '%s' "$BAR" > /sti-fake/BAR
printf '%s' "$BAZ" > /sti-fake/BAZ
touch /sti-fake/prepare-invoked
echo "prepare: done"
"""


def build_sti_fake(api: docker.APIClient, tag: str) -> str:
    """sti-fake: prepare copies /tmp/src to /sti-fake/src and records env; run and save."""
    files = {
        "/usr/bin/prepare": PREPARE,
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    return build_busybox_image(api, tag, files, dockerfile_lines=[_CMD_SH])


def build_sti_fake_builder(api: docker.APIClient, tag: str) -> str:
    """sti-fake-builder: prepare copies /tmp/src/. into /tmp/build/ (extended builds)."""
    files = {
        "/usr/bin/prepare": BUILDER_PREPARE,
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    return build_busybox_image(api, tag, files, dockerfile_lines=[_CMD_SH])


def build_sti_fake_broken(api: docker.APIClient, tag: str) -> str:
    """sti-fake-broken: has /usr/bin/run but no /usr/bin/prepare."""
    files = {"/usr/bin/run": RUN}
    return build_busybox_image(api, tag, files, dockerfile_lines=[_CMD_SH])


def build_sti_fake_no_save(api: docker.APIClient, tag: str) -> str:
    """sti-fake-no-save: like sti-fake but without /usr/bin/save-artifacts."""
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}
    return build_busybox_image(api, tag, files, dockerfile_lines=[_CMD_SH])


def build_sti_fake_failing(api: docker.APIClient, tag: str) -> str:
    """sti-fake-failing: prepare prints "prepare: about to fail" and exits 3."""
    files = {
        "/usr/bin/prepare": FAILING_PREPARE,
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    return build_busybox_image(api, tag, files, dockerfile_lines=[_CMD_SH])


def build_sti_fake_entrypoint(api: docker.APIClient, tag: str) -> str:
    """sti-fake-entrypoint: like sti-fake, with ENTRYPOINT /bin/false and no /bin/true."""
    files = {
        "/usr/bin/prepare": PREPARE,
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    lines = ["RUN rm -f /bin/true", 'ENTRYPOINT ["/bin/false"]', _CMD_SH]
    return build_busybox_image(api, tag, files, dockerfile_lines=lines)


def build_sti_fake_env(api: docker.APIClient, tag: str) -> str:
    """sti-fake-env: prepare writes $FOO, $BAR and $BAZ byte-exact to /sti-fake/<NAME>."""
    files = {"/usr/bin/prepare": ENV_PREPARE, "/usr/bin/run": RUN}
    return build_busybox_image(api, tag, files, dockerfile_lines=[_CMD_SH])


SLOW_PREPARE = """\
#!/bin/sh
set -e
echo "prepare: started at $(cut -d" " -f1 /proc/uptime)"
sleep "${SLEEP:-30}"
mkdir -p /sti-fake
touch /sti-fake/prepare-invoked
echo "prepare: finished at $(cut -d" " -f1 /proc/uptime)"
"""


def build_sti_fake_slow(api: docker.APIClient, tag: str) -> str:
    """sti-fake-slow: prepare prints the uptime at start, sleeps $SLEEP (30 s), then at its end."""
    return build_busybox_image(
        api,
        tag,
        {"/usr/bin/prepare": SLOW_PREPARE, "/usr/bin/run": RUN},
        dockerfile_lines=[_CMD_SH],
    )


S2I_ASSEMBLE = """\
#!/bin/sh
set -e
echo "assemble: as $(id -u)"
if [ -f /tmp/artifacts/cache.txt ]; then
    echo "assemble: restoring artifacts"
    cp /tmp/artifacts/cache.txt /opt/app-root/restored.txt
fi
mv /tmp/src/* /opt/app-root/
echo "cache from an earlier build" > /opt/app-root/cache.txt
"""

S2I_SAVE_ARTIFACTS = """\
#!/bin/sh
cd /opt/app-root
tar cf - cache.txt
"""


def build_s2i_fake(api: docker.APIClient, tag: str) -> str:
    """s2i-fake: an s2i builder (scripts-url label, USER 1001): assemble moves /tmp/src into
    /opt/app-root and restores cache.txt from /tmp/artifacts; save-artifacts tars it to stdout."""
    return build_busybox_image(
        api,
        tag,
        {
            "/usr/libexec/s2i/assemble": S2I_ASSEMBLE,
            "/usr/libexec/s2i/run": "#!/bin/sh\nls /opt/app-root\n",
            "/usr/libexec/s2i/save-artifacts": S2I_SAVE_ARTIFACTS,
        },
        dockerfile_lines=[
            "RUN mkdir -p /opt/app-root && chown 1001:0 /opt/app-root",
            "LABEL io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
            "USER 1001",
            _CMD_SH,
        ],
    )


BUILDERS: dict[str, Callable[[docker.APIClient, str], str]] = {
    "sti-fake": build_sti_fake,
    "sti-fake-builder": build_sti_fake_builder,
    "sti-fake-broken": build_sti_fake_broken,
    "sti-fake-no-save": build_sti_fake_no_save,
    "sti-fake-failing": build_sti_fake_failing,
    "sti-fake-entrypoint": build_sti_fake_entrypoint,
    "sti-fake-env": build_sti_fake_env,
    "sti-fake-slow": build_sti_fake_slow,
    "s2i-fake": build_s2i_fake,
}


def build_all(api: docker.APIClient, prefix: str = "sti-test/") -> dict[str, str]:
    """Build every fixture image; map short name ("sti-fake", ...) to its tag."""
    tags: dict[str, str] = {}
    for name, build in BUILDERS.items():
        tag = f"{prefix}{name}"
        build(api, tag)
        tags[name] = tag
    return tags
