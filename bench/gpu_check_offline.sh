#!/usr/bin/env bash
# Run the GPU check (bench/gpu_check.py) on the GPU machine, which has no network: the
# packages its image lacks (Ray, Optuna, MLflow and their dependencies) come from
# .gpu_bundle/site.tar.xz, built by bench/gpu_bundle.sh (`make gpu-bundle`) on a machine
# with PyPI and carried along with the working tree. The machine's own python3 (3.12) and
# torch (CUDA) are used.
#
#   bash bench/gpu_check_offline.sh [gpu_check.py arguments]     (make gpu-check-offline)
#
# Environment (optional): SCITUNE_SITE, the folder to unpack into (default
# /tmp/scitune-site); SCITUNE_BUNDLE, the archive (default .gpu_bundle/site.tar.xz);
# PYTHON, the interpreter (default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repo root
REPO=$PWD
ARCHIVE=${SCITUNE_BUNDLE:-.gpu_bundle/site.tar.xz}
SITE=${SCITUNE_SITE:-/tmp/scitune-site}
PY=${PYTHON:-python3}

if [ ! -f "$ARCHIVE" ]; then
    echo "gpu_check_offline: no $ARCHIVE here: build it with 'make gpu-bundle' on a machine" \
         "with PyPI and carry .gpu_bundle/site.tar.xz to this one" >&2
    exit 1
fi

# --- unpack, unless this archive is already unpacked there -----------------------------------
sum=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
if [ "$(cat "$SITE/.archive.sha256" 2>/dev/null || true)" != "$sum" ]; then
    echo "unpacking $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)) into $SITE"
    tmp="$SITE.partial.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if command -v xz >/dev/null 2>&1; then
        xz -dc "$ARCHIVE" | tar -xf - -C "$tmp"
    else  # no xz binary: Python's own lzma (file modes, e.g. Ray's executables, are kept)
        "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
            "$ARCHIVE" "$tmp"
    fi
    echo "$sum" >"$tmp/.archive.sha256"  # written last: a half-unpacked folder never matches
    rm -rf "$SITE"
    mv "$tmp" "$SITE"
else
    echo "$ARCHIVE already unpacked in $SITE"
fi
# Its compiled parts (Ray, pydantic-core, ...) are for one Python X.Y.
want=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["python"])' "$SITE/_scitune_bundle.json")
have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$want" != "$have" ]; then
    echo "gpu_check_offline: the bundle is for Python $want, but $PY is Python $have" \
         "(set PYTHON=/path/to/python$want, or rebuild with GPU_BUNDLE_PYTHON_VERSION=$have)" >&2
    exit 1
fi

# --- what the bundle expects of the image's packages ----------------------------------------
# _scitune_bundle.json lists the version ranges that bundled packages put on packages the
# image provides (whose versions were unknown when the bundle was built). Where the image's
# copy misses one and the bundle has a newer fallback copy (_fallback/NAME, small packages
# only), that copy goes on PYTHONPATH; otherwise a warning says so. Runs before PYTHONPATH
# holds the bundle, so what it sees installed is the image's.
fallbacks=$("$PY" - "$SITE" <<'EOF'
import json, re, sys
from importlib import metadata
from pathlib import Path

site = Path(sys.argv[1])
say = lambda *a: print(*a, file=sys.stderr)
try:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
except ImportError:
    say("(packaging not importable: the image's versions are not checked)")
    sys.exit()
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
manifest = json.loads((site / "_scitune_bundle.json").read_text())
fallbacks = manifest.get("fallbacks", {})
installed = {}
for dist in metadata.distributions():
    installed.setdefault(norm(dist.metadata["Name"] or ""), dist.version)
def meets(version, spec):
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidVersion:  # a version packaging cannot read: not judged
        return True
def older(a, b):
    try:
        return Version(a) < Version(b)
    except InvalidVersion:
        return False
problems = used = 0
for name, needs in sorted(manifest["image_requirements"].items()):
    have = installed.get(name)
    missed = [n for n in needs if have is None or not meets(have, n.split(" (by ", 1)[0])]
    if not missed:
        continue
    fallback = fallbacks.get(name)
    if fallback and (have is None or older(have, fallback)) \
            and all(meets(fallback, n.split(" (by ", 1)[0]) for n in needs):
        say(f"note: the image's {name} {have or '(none)'} misses {'; '.join(missed)}: "
            f"using the bundle's {name} {fallback} instead")
        print(site / "_fallback" / name)
        used += 1
        continue
    for need in missed:
        say(f"WARNING: the image's {name} {have or '(none)'} does not meet {need}")
        problems += 1
for name in sorted({norm(d["name"]) for d in manifest["bundled"]} & set(installed)):
    say(f"note: {name} is on the image ({installed[name]}) and in the bundle: the bundle's is used")
say(f"image packages checked against the bundle: {used} fallback(s) used, {problems} warning(s)"
    + ("; if an import fails, rebuild the bundle with GPU_BUNDLE_INCLUDE='NAME ...'"
       if problems else ""))
EOF
) || fallbacks=""

# --- the environment: fallbacks, bundle, repo, then whatever was there ----------------------
pythonpath="$SITE:$REPO"
for dir in $fallbacks; do
    pythonpath="$dir:$pythonpath"
done
export PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"  # console scripts of the bundle (ray, mlflow, optuna, ...)
# No network here: keep Ray's usage stats and MLflow's telemetry from trying to send.
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
echo "PYTHONPATH=$PYTHONPATH"

"$PY" -c '
import sys, torch, ray, optuna, mlflow
import pymatgen.core, spglib  # the XRD generator (every check simulates patterns)
print(f"python {sys.version.split()[0]}  torch {torch.__version__}  ray {ray.__version__}  "
      f"optuna {optuna.__version__}  mlflow {mlflow.__version__}  "
      f"cuda available: {torch.cuda.is_available()}")
print(f"ray from {ray.__file__}")'

exec "$PY" bench/gpu_check.py "$@"
