#!/usr/bin/env bash
# System programs the slow tests use and PyPI does not carry: PostgreSQL (the team tracking
# server test) and Chromium (the browser tests). Installed with apt-get where they are missing
# and apt-get can run (root, or password-less sudo); otherwise the tests that need them skip
# and say why. Never fails the build: a missing program is a skipped test, not a broken one.
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: ${missing[*]} not installed and no apt-get here: the tests that need them skip"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "note: ${missing[*]} not installed and apt-get needs root: the tests that need them skip"
    exit 0
fi
echo "installing ${missing[*]} with apt-get (for the slow tests)"
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/tmp/scitune-apt.log 2>&1; then
    # the package lists may be stale on a fresh machine: refresh them once and retry
    "${sudo[@]}" apt-get update -q >>/tmp/scitune-apt.log 2>&1 || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >>/tmp/scitune-apt.log 2>&1 \
        || echo "note: apt-get could not install ${missing[*]} (see /tmp/scitune-apt.log): the tests that need them skip"
fi
exit 0
