#!/usr/bin/env bash
# Build .gpu_bundle/site.tar.xz: the Python packages the platform needs on the GPU check
# machine that its image lacks (Ray, Optuna, MLflow and their dependencies), for CPython
# 3.12 on manylinux x86_64.
#
# That machine has no network (no PyPI) and its own torch (CUDA) and scientific stack; all
# that reaches it is the working tree plus carried files, 64 MiB in all. So this script,
# run here (where PyPI is reachable) from the repo root as `make gpu-bundle`:
#   1. resolves the dependency closure of the project's runtime requirements (from
#      pyproject.toml, torch, optuna-dashboard and hdf5plugin left out, psutil added) for the target
#      Python, keeping the project's pins;
#   2. leaves out every distribution already on the machine (bench/gpu_image_packages.txt);
#   3. downloads the remaining wheels (exact files, hash-checked) and installs them with
#      `pip install --no-deps --target` (so file modes, e.g. Ray's gcs_server and raylet
#      executables, are right); small image packages that bundled ones put a version bound
#      on also get a fallback copy, used there only where the image's is too old (3b);
#   4. prunes what a Python-only Ray search does not need;
#   5. packs the folder into .gpu_bundle/site.tar.xz and fails if it is over 56 MiB.
# bench/gpu_check_offline.sh unpacks it on the GPU machine and puts it on PYTHONPATH.
# Only that one file travels: name .gpu_bundle/site.tar.xz itself (not the folder, whose
# wheels, unpacked site and pip venv, ~600 MB, serve reruns here) in what is carried.
#
# Environment (all optional):
#   GPU_BUNDLE_PYTHON_VERSION  target Python X.Y (default 3.12, the GPU machine's)
#   GPU_BUNDLE_PYTHON          interpreter of that X.Y to resolve with (default: found
#                              under ~/.pyenv/versions, or on PATH as pythonX.Y)
#   GPU_BUNDLE_DIR             output folder (default .gpu_bundle)
#   GPU_BUNDLE_IMAGE_LIST      the image's package list (default bench/gpu_image_packages.txt)
#   GPU_BUNDLE_INCLUDE         names to bundle although the image has them (space-separated),
#                              e.g. when gpu_check_offline.sh warns that the image's version
#                              of one without a fallback (3b) is too old for a bundled
#                              package; the bundled copy then shadows the image's
#   GPU_BUNDLE_TEST_PYTHON     an interpreter with the image's packages (e.g. a scratch venv):
#                              when set, the pruned folder is import-checked with it first
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repo root

PYVER=${GPU_BUNDLE_PYTHON_VERSION:-3.12}
OUT=${GPU_BUNDLE_DIR:-.gpu_bundle}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: pip and the checks below run from other folders too
INCLUDE=${GPU_BUNDLE_INCLUDE:-}
IMAGE_LIST=${GPU_BUNDLE_IMAGE_LIST:-bench/gpu_image_packages.txt}
LIMIT_MIB=56  # the repo (~3 MB) and anything else carried must fit in 64 MiB with it
FALLBACK_MAX_KIB=512   # image packages whose wheel is at most this big get a fallback (3b)
ARCHIVE="$OUT/site.tar.xz"
STAGE="$OUT/site"     # the folder that becomes the archive (and PYTHONPATH on the GPU machine)
WHEELS="$OUT/wheels"  # downloaded wheels, kept between runs

# manylinux tags the wheels may carry: glibc 2.28 or newer is assumed (the GPU machine's
# Python 3.12.3 is most likely Ubuntu 24.04's, glibc 2.39; this machine has 2.36). pip also
# accepts the older tags these imply (e.g. manylinux1 for py-spy).
PLATFORM_ARGS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64)
TARGET_ARGS=(--python-version "$PYVER" --implementation cp --only-binary=:all: "${PLATFORM_ARGS[@]}")

# Not resolved with the rest: torch is the image's own CUDA build (never bundled), the Optuna
# dashboard is a UI for a person; pymatgen's full closure cannot be resolved from wheels
# alone (bibtexparser 1.x is an sdist) and pulls plotly, so it comes in step 3c instead.
# hdf5plugin (a 46 MB wheel of compression filters) would not fit the bundle and decodes only
# users' compressed files: the check's synthetic data are uncompressed, and the platform
# reads them without it.
SKIP_REQUIREMENTS="torch optuna-dashboard pymatgen hdf5plugin"
# Step 3c: pymatgen and what importing pymatgen.core needs beyond the image's packages (the
# XRD generator builds every simulated pattern's crystal with it, and spglib names its
# lattice), installed without their dependencies; plotly and bibtexparser are left out
# (plots and citations, which the platform never imports). Versions as the project's
# resolution picks them for Python 3.11 (pymatgen's own pin is read from pyproject.toml).
PYMATGEN_SET="pymatgen-core==2026.10.16 spglib==2.8.0 monty==2026.10.21 ruamel.yaml==0.19.1
              uncertainties==3.2.3 palettable==3.3.3 orjson==3.13.0"
# Imported at run time but only named in an optional extra of pyproject.toml.
EXTRA_REQUIREMENTS="psutil"

log() { printf '\n== %s\n' "$*"; }
die() { printf 'gpu_bundle: %s\n' "$*" >&2; exit 1; }

# --- an interpreter of the target Python version to run pip with -------------------------
# pip evaluates environment markers (python_version < "3.12" ...) against the interpreter it
# runs in, whatever --python-version says, so the resolution must run on the target version.
find_python() {
    local cand
    for cand in "${GPU_BUNDLE_PYTHON:-}" "$HOME"/.pyenv/versions/"$PYVER"*/bin/"python$PYVER" "python$PYVER"; do
        [ -n "$cand" ] || continue
        if "$cand" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$PYVER'.split('.'))))" \
            2>/dev/null; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}
BASE_PY=$(find_python) || die "no Python $PYVER found to resolve with: set GPU_BUNDLE_PYTHON=/path/to/python$PYVER"

mkdir -p "$WHEELS"
# A small venv of our own, so the pip that resolves is known and recent.
PIPENV="$OUT/pip-py$PYVER"
if [ ! -x "$PIPENV/bin/python" ]; then
    log "pip venv for Python $PYVER ($BASE_PY)"
    "$BASE_PY" -m venv "$PIPENV"
fi
PY="$PIPENV/bin/python"

# pip, without the one-line warning per package that this machine's pip config (an extra
# local index with gaps) prints; pip's own exit status is kept (pipefail).
pip_() {
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip "$@" 2>&1 \
        | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}
if [ ! -f "$PIPENV/.upgraded" ]; then
    pip_ install --quiet --upgrade pip
    touch "$PIPENV/.upgraded"
fi

# --- 1. the requirements ------------------------------------------------------------------
log "requirements (from pyproject.toml)"
"$PY" - "$IMAGE_LIST" "$SKIP_REQUIREMENTS" "$EXTRA_REQUIREMENTS" >"$OUT/requirements.in" <<'EOF'
import re, sys, tomllib
from pip._vendor.packaging.requirements import Requirement

norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
image_list, skip, extra = sys.argv[1], set(sys.argv[2].split()), set(sys.argv[3].split())
known = {}  # versions known to be on the image replace the project's pins
for line in open(image_list):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        known[norm(name)] = version.strip()
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
specs = list(project["dependencies"])
optional = [s for group in project.get("optional-dependencies", {}).values() for s in group]
specs += [s for s in optional if norm(Requirement(s).name) in extra]
seen = set()
for spec in specs:
    req = Requirement(spec)
    name = norm(req.name)
    if name in skip or name in seen:
        continue
    seen.add(name)
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    pin = f"=={known[name]}" if name in known else str(req.specifier)
    print(f"{req.name}{extras}{pin}")
EOF
cat "$OUT/requirements.in"

# --- 1b. the closure ----------------------------------------------------------------------
log "resolving the closure for CPython $PYVER manylinux x86_64"
rm -rf "$OUT/resolve-target"
pip_ install --dry-run --quiet --ignore-installed --report "$OUT/resolve.json" \
    --target "$OUT/resolve-target" "${TARGET_ARGS[@]}" -r "$OUT/requirements.in" \
    || die "resolution failed (pip says why above; a wheel missing for these tags? add a --platform manylinux_2_N_x86_64 to PLATFORM_ARGS)"
rm -rf "$OUT/resolve-target"

# --- 2. what the image lacks --------------------------------------------------------------
# bundle.lock: name==version --hash=sha256:... of each distribution to bundle;
# bundle.files: their wheel file names; image.txt: the closure's distributions the image
# has; _scitune_bundle.json (inside the archive): the bundle's contents and the version
# requirements its distributions put on the image's, for gpu_check_offline.sh to check.
"$PY" - "$IMAGE_LIST" "$OUT" "$PYVER" "$INCLUDE" <<'EOF'
import fnmatch, json, re, sys, urllib.parse
from pathlib import Path
from pip._vendor.packaging.requirements import Requirement

norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
image_list, out, pyver = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
patterns = [norm(line.split("#", 1)[0].split("==", 1)[0].strip())
            for line in open(image_list) if line.split("#", 1)[0].strip()]
include = {norm(n) for n in sys.argv[4].split()}
on_image = lambda name: (norm(name) not in include
                         and any(fnmatch.fnmatchcase(norm(name), p) for p in patterns))

report = json.load(open(out / "resolve.json"))
env = dict(report["environment"])
assert env["python_version"] == pyver, env
bundle, image, lock, files, needs, on_image_items = [], [], [], [], {}, []
for item in report["install"]:
    meta = item["metadata"]
    name, version = meta["name"], meta["version"]
    info = item["download_info"]
    filename = urllib.parse.unquote(info["url"].rsplit("/", 1)[-1])
    sha = info["archive_info"]["hashes"]["sha256"]
    if on_image(name):
        image.append(f"{name}=={version}")
        on_image_items.append((name, version, filename, sha))
        continue
    bundle.append({"name": name, "version": version, "wheel": filename})
    lock.append(f"{name}=={version} --hash=sha256:{sha}")
    files.append(filename)
    extras = item.get("requested_extras") or []
    for spec in meta.get("requires_dist", []):
        req = Requirement(spec)
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in [""] + extras):
            continue
        if on_image(req.name) and str(req.specifier):
            needs.setdefault(norm(req.name), []).append(f"{req.specifier} (by {name} {version})")
# Fallback candidates (step 3b): the image's distributions a bundled one puts a version bound on.
fallback = [t for t in on_image_items if norm(t[0]) in needs]
(out / "fallback.lock").write_text("".join(f"{n}=={v} --hash=sha256:{h}\n" for n, v, _, h in fallback))
(out / "fallback.files").write_text("".join(f"{norm(n)} {v} {f}\n" for n, v, f, _ in fallback))
(out / "bundle.lock").write_text("\n".join(lock) + "\n")
(out / "bundle.files").write_text("\n".join(files) + "\n")
(out / "image.txt").write_text("\n".join(sorted(image)) + "\n")
(out / "manifest.json").write_text(json.dumps(
    {"python": pyver, "bundled": bundle, "resolved_on_image": sorted(image),
     "image_requirements": needs}, indent=1) + "\n")
missing = include - {norm(item["metadata"]["name"]) for item in report["install"]}
if missing:
    sys.exit(f"GPU_BUNDLE_INCLUDE names what the closure does not hold: {' '.join(sorted(missing))}")
print(f"{len(report['install'])} distributions in the closure: {len(bundle)} to bundle, "
      f"{len(image)} already on the image")
print("bundled:", " ".join(f"{b['name']}=={b['version']}" for b in bundle))
EOF

# --- 3. download and install --------------------------------------------------------------
log "downloading wheels into $WHEELS"
pip_ download --quiet --no-deps --require-hashes -d "$WHEELS" "${TARGET_ARGS[@]}" -r "$OUT/bundle.lock"

log "installing into $STAGE"
rm -rf "$STAGE"
mapfile -t wheel_files < <(sed "s|^|$WHEELS/|" "$OUT/bundle.files")
pip_ install --quiet --no-deps --no-index --no-compile --target "$STAGE" "${TARGET_ARGS[@]}" \
    "${wheel_files[@]}"
# Console scripts got this machine's venv interpreter in their #! line: use the python3 on
# PATH instead (the GPU machine's, with this folder on PYTHONPATH). Binaries (py-spy) stay.
if [ -d "$STAGE/bin" ]; then
    for f in "$STAGE"/bin/*; do
        if head -c 2 "$f" | grep -q '^#!'; then
            sed -i '1s|^#!.*python.*$|#!/usr/bin/env python3|' "$f"
        fi
    done
fi
# A folder on PYTHONPATH does not run .pth files, and a google/__init__.py would hide the
# image's google.protobuf (google is a namespace package shared with it).
if find "$STAGE" -maxdepth 1 -name '*.pth' | grep -q .; then
    die "a bundled distribution relies on a .pth file: $(find "$STAGE" -maxdepth 1 -name '*.pth')"
fi
[ ! -e "$STAGE/google/__init__.py" ] || die "$STAGE/google/__init__.py would shadow the image's google.protobuf"

# --- 3c. pymatgen, without plotly and bibtexparser ------------------------------------------
pymatgen_pin=$("$PY" -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if d.replace(" ", "").lower().startswith("pymatgen=")))')
log "pymatgen for the XRD generator: $pymatgen_pin and $(echo $PYMATGEN_SET)"
# shellcheck disable=SC2086  # a list of requirement specifiers
pip_ download --quiet --no-deps -d "$WHEELS" "${TARGET_ARGS[@]}" \
    --platform manylinux_2_27_x86_64 "$pymatgen_pin" $PYMATGEN_SET \
    || die "pymatgen's wheels could not be downloaded (pip says why above)"
# shellcheck disable=SC2086
pip_ install --quiet --no-deps --no-index --find-links "$WHEELS" --no-compile --target "$STAGE" \
    "${TARGET_ARGS[@]}" --platform manylinux_2_27_x86_64 "$pymatgen_pin" $PYMATGEN_SET \
    || die "pymatgen's wheels could not be installed (pip says why above)"
: >"$OUT/pymatgen.files"
for spec in "$pymatgen_pin" $PYMATGEN_SET; do
    echo "${spec%%==*} ${spec##*==}" >>"$OUT/pymatgen.files"
done

# --- 3b. fallbacks ------------------------------------------------------------------------
# The image's versions are unknown. Where a bundled package needs a newer version of one the
# image has, the import fails there, with no network to fix it (e.g. pydantic-core imports
# typing_extensions.Sentinel, new in 4.16; the generated code of opentelemetry-proto and
# googleapis-common-protos needs a recent protobuf runtime). So each such package whose
# wheel is small gets a copy in _fallback/NAME/, which gpu_check_offline.sh puts on
# PYTHONPATH only where the image's copy is older than it and misses a bound. Larger ones
# (numpy, pandas, pyarrow, aiohttp, ...) only get a warning there: to bundle one outright,
# GPU_BUNDLE_INCLUDE=NAME.
log "fallback copies of small image packages (wheels <= $FALLBACK_MAX_KIB KiB)"
if [ -s "$OUT/fallback.lock" ]; then
    pip_ download --quiet --no-deps --require-hashes -d "$WHEELS" "${TARGET_ARGS[@]}" \
        -r "$OUT/fallback.lock"
    kept=()
    while read -r name version file; do
        size=$(stat -c %s "$WHEELS/$file")
        if [ "$size" -le $((FALLBACK_MAX_KIB * 1024)) ]; then
            pip_ install --quiet --no-deps --no-index --no-compile \
                --target "$STAGE/_fallback/$name" "${TARGET_ARGS[@]}" "$WHEELS/$file"
            rm -rf "${STAGE:?}/_fallback/$name/bin"
            kept+=("$name==$version")
        else
            echo "  no fallback (wheel of $((size / 1024)) KiB): $name==$version"
        fi
    done <"$OUT/fallback.files"
    echo "  fallbacks: ${kept[*]:-none}"
fi
# The manifest gpu_check_offline.sh reads, with the fallbacks kept.
"$PY" - "$OUT/manifest.json" "$STAGE" <<'EOF'
import json, re, sys
from pathlib import Path

norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
manifest, stage = json.load(open(sys.argv[1])), Path(sys.argv[2])
kept = {p.name for p in (stage / "_fallback").iterdir()} if (stage / "_fallback").is_dir() else set()
versions = dict(n.split("==", 1) for n in manifest["resolved_on_image"])
manifest["fallbacks"] = {norm(n): v for n, v in versions.items() if norm(n) in kept}
extra = Path(sys.argv[1]).parent / "pymatgen.files"  # step 3c's, installed without deps
if extra.exists():
    manifest["bundled"] += [{"name": n, "version": v, "wheel": "(step 3c, no deps)"}
                            for n, v in (line.split() for line in extra.read_text().splitlines())]
(stage / "_scitune_bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
EOF
before_kib=$(du -sk "$STAGE" | cut -f1)

# --- 4. prune -----------------------------------------------------------------------------
# Checked by importing ray.tune, ray.train, ray.train.torch, ray.tune.search.optuna,
# ray.tune.schedulers, ray.tune.integration.ray_train, mlflow.pytorch and running
# `launch.py` searches and `bench/gpu_check.py --cpu-dry-run` (dashboard on, DDP trials)
# with the bundle on PYTHONPATH.
#   ray/jars            Ray's Java worker (33 MB): the platform is Python-only
#   ray/rllib ray/serve ray/llm   nothing the platform, Tune, Train or the dashboard imports
#                       needs them (the dashboard's Serve module imports ray.serve only
#                       when a Serve endpoint is asked for, and answers 501 without it)
#   ray/data is kept:   importing ray.train imports it (its trainers and DataConfig)
#   mlflow/server/js/build   MLflow's web UI (27 MB, 4.5 MB packed): nobody browses it on the
#                       offline GPU machine; tracking, the model registry and `mlflow server`'s
#                       REST API do not use it
#   *.js.map            source maps of the dashboard's and MLflow's web UIs
#   __pycache__, *.pyc  rebuilt on first import
log "pruning"
PRUNE_DIRS=(ray/jars ray/rllib ray/serve ray/llm mlflow/server/js/build)
for d in "${PRUNE_DIRS[@]}"; do
    if [ -e "$STAGE/$d" ]; then
        echo "  $d: $(du -sh "$STAGE/$d" | cut -f1)"
        rm -rf "${STAGE:?}/$d"
    fi
done
rm -f "$STAGE/bin/serve"  # the console script of the pruned ray.serve
maps=$(find "$STAGE" -name '*.js.map' | wc -l)
echo "  *.js.map: $maps files, $(find "$STAGE" -name '*.js.map' -print0 | du -ch --files0-from=- | tail -1 | cut -f1)"
find "$STAGE" -name '*.js.map' -delete
find "$STAGE" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$STAGE" -name '*.pyc' -delete
echo "  site folder: $((before_kib / 1024)) MiB -> $(( $(du -sk "$STAGE" | cut -f1) / 1024 )) MiB"

if [ -n "${GPU_BUNDLE_TEST_PYTHON:-}" ]; then
    log "import check with $GPU_BUNDLE_TEST_PYTHON"
    PYTHONPATH="$STAGE:$PWD" "$GPU_BUNDLE_TEST_PYTHON" -c "
import ray, ray.tune, ray.train, ray.tune.search.optuna, ray.tune.schedulers
import ray.tune.integration.ray_train, optuna, cmaes, mlflow, mlflow.tracking, sqlalchemy, alembic
import pymatgen.core, spglib
print('ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__)"
fi

# --- 5. pack ------------------------------------------------------------------------------
# One xz thread: with two, xz -9 cuts the ~280 MB into two blocks compressed apart, and the
# archive comes out ~3 MiB bigger (about as quick on 2 cores).
log "packing $ARCHIVE (xz -9, about 2 minutes)"
rm -f "$ARCHIVE"
tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner -cf - . \
    | xz -9 -T1 >"$ARCHIVE.part"
mv "$ARCHIVE.part" "$ARCHIVE"
size=$(stat -c %s "$ARCHIVE")
echo "$ARCHIVE: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB)," \
    "$(grep -c . "$OUT/bundle.files") distributions"
if [ "$size" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
    die "$ARCHIVE is over $LIMIT_MIB MiB: it and the repo would not fit in the 64 MiB carried to the GPU machine; prune more (see step 4)"
fi
