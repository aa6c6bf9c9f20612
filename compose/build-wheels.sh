#!/usr/bin/env bash
# Build the wheels compose/Dockerfile installs (sti with its worker and deploy extras) on this host,
# into compose/wheels, so that image builds need no package index. Usage: [PYTHON].
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
WHEELS="$ROOT/compose/wheels"
STARTED=$SECONDS

# A python3 of the images' minor version (3.11) with pip: the project's venv first.
PYTHON="${1:-${PYTHON:-}}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    printf 'WARNING: %s is not Python 3.11; wheels with C extensions may not fit the image\n' \
        "$PYTHON" >&2

# Build sti from a copy of the work tree (tracked and untracked files, not ignored ones): an
# in-tree build would leave build/ behind, and stale files there would end up in the wheel.
SOURCE="$(mktemp -d)"
trap 'rm -rf "$SOURCE"' EXIT
PARTS=(pyproject.toml README.md sti sti_worker sti_submit)
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard -- "${PARTS[@]}" |
        (cd "$ROOT" && xargs -0 -r tar -c --ignore-failed-read -f -) | tar -x -C "$SOURCE"
else
    tar -C "$ROOT" -c --exclude=__pycache__ -f - "${PARTS[@]}" | tar -x -C "$SOURCE"
fi

# Same sources, same wheel bytes: the image build's COPY of the wheels then stays cached.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"

# Only this build's wheels: a stale sti wheel of the same version would shadow the new code.
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS" \
    "$SOURCE[worker,deploy]" 2> >(grep -v -e "^WARNING: Location 'file:" >&2)
# pip chose the dependencies for this Python's exact version; an image's Python may be another
# 3.11.x (Debian's is 3.11.2) and need more (redis needs async-timeout before 3.11.3): add them.
for _ in 1 2 3; do
    mapfile -t MISSING < <("$PYTHON" - "$WHEELS" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


wheels = {norm(w.name.split("-")[0]): w for w in Path(sys.argv[1]).glob("*.whl")}
todo, seen, missing = [("sti", frozenset({"worker", "deploy"}))], set(), {}
while todo:
    name, extras = todo.pop()
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    with zipfile.ZipFile(wheels[name]) as wheel:
        meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        lines = wheel.read(meta).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        envs = [
            {"python_version": "3.11", "python_full_version": f"3.11.{patch}", "extra": extra}
            for patch in range(20)
            for extra in ["", *extras]
        ]
        if req.marker and not any(req.marker.evaluate(env) for env in envs):
            continue
        if norm(req.name) in wheels:
            todo.append((norm(req.name), frozenset(req.extras)))
        else:
            req.marker = None
            missing[norm(req.name)] = str(req)
print(*missing.values(), sep="\n")
PY
    )
    [[ ${#MISSING[@]} -gt 0 && -n "${MISSING[0]}" ]] || break
    printf '==> wheels for other Python 3.11 releases: %s\n' "${MISSING[*]}" >&2
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS" \
        "${MISSING[@]}" 2> >(grep -v -e "^WARNING: Location 'file:" >&2)
done

printf '==> %s wheels in %s (%ss)\n' "$(find "$WHEELS" -name '*.whl' | wc -l)" "$WHEELS" \
    "$((SECONDS - STARTED))" >&2
