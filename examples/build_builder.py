"""Build the example httpd builder image offline from busybox-static.

Usage: python examples/build_builder.py [TAG]   (default tag: sti-example/httpd-builder)
"""

from __future__ import annotations

import sys
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(REPO_ROOT) not in sys.path:  # allow running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from examples.busybox_images import build_busybox_image  # noqa: E402

DEFAULT_TAG = "sti-example/httpd-builder"
SCRIPTS = ("prepare", "run", "save-artifacts")


def build(api: docker.APIClient, tag: str = DEFAULT_TAG) -> str:
    """Build the httpd builder image as ``tag``; return its image id."""
    files = {f"/usr/bin/{name}": (HERE / "httpd-builder" / name).read_bytes() for name in SCRIPTS}
    return build_busybox_image(
        api,
        tag,
        files,
        dockerfile_lines=["EXPOSE 8080", 'CMD ["/usr/bin/run"]'],
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print((__doc__ or "").strip(), file=sys.stderr)
        return 2
    tag = args[0] if args else DEFAULT_TAG
    client = docker.from_env()
    try:
        build(client.api, tag)
    finally:
        client.close()
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
