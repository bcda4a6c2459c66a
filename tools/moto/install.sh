#!/usr/bin/env bash
# Installs moto server (PyPI moto[server], pinned below; its dependencies pinned by
# constraints.txt beside this script) into the project-local virtual environment
# <repo>/.emulators/moto-venv. The tests start it through tools/moto/run.py (see
# kcl-adapter/src/local_sqs.rs); DynamoDB Local has no SQS, moto emulates it.
#
# Idempotent: when the pinned version is already installed it only checks and prints the
# paths (well under a second). Fails loudly when python3 (3.9 or newer) or its venv module is
# missing.
#
# Environment: EMULATORS_DIR overrides <repo>/.emulators; PYTHON overrides `python3`.
set -euo pipefail

MOTO_VERSION=5.2.5

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
EMULATORS_DIR=${EMULATORS_DIR:-$REPO_ROOT/.emulators}
VENV=$EMULATORS_DIR/moto-venv
CONSTRAINTS=$SCRIPT_DIR/constraints.txt
# Written last, holding the installed version: a half-finished install is never taken as done.
MARKER=$VENV/.kcl-moto-version

log() { printf 'moto install: %s\n' "$*" >&2; }
die() { printf 'moto install: ERROR: %s\n' "$*" >&2; exit 1; }

# --- fast path ------------------------------------------------------------------------
installed() {
    [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/moto_server" ] && [ -f "$MARKER" ] \
        && [ "$(cat "$MARKER")" = "$MOTO_VERSION" ]
}

report() {
    cat <<EOF
moto $MOTO_VERSION ready:
  venv:   $VENV
  start:  $VENV/bin/python $SCRIPT_DIR/run.py    (prints "READY port=P"; exits when stdin closes)
EOF
}

if installed; then
    log "moto $MOTO_VERSION already installed"
    report
    exit 0
fi

# --- prerequisites --------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 \
    || die "'$PYTHON' not found on PATH (need Python 3.9+ with venv; on Debian: apt-get install -y python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || die "$PYTHON is $("$PYTHON" --version 2>&1); moto $MOTO_VERSION needs Python 3.9 or newer"
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || die "$PYTHON has no working venv module (on Debian: apt-get install -y python3-venv)"
[ -f "$CONSTRAINTS" ] || die "missing $CONSTRAINTS"

mkdir -p "$EMULATORS_DIR"

# Serialise concurrent installs (parallel test binaries may all call this script).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$EMULATORS_DIR/.moto-install.lock"
    flock 9
    if installed; then
        log "moto $MOTO_VERSION installed by a concurrent run"
        report
        exit 0
    fi
fi

# --- install --------------------------------------------------------------------------
# A virtual environment cannot be moved (its scripts name it by absolute path), so it is
# built in place; the marker says when it is complete.
log "installing moto[server]==$MOTO_VERSION into $VENV (about half a minute)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed"
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -c "$CONSTRAINTS" "moto[server]==$MOTO_VERSION" >&2; then
    die "pip install moto[server]==$MOTO_VERSION failed (is PyPI reachable? see the pip output above)"
fi
got=$("$VENV/bin/python" -c 'import moto; print(moto.__version__)') \
    || die "moto does not import from $VENV"
[ "$got" = "$MOTO_VERSION" ] || die "pip installed moto $got, expected $MOTO_VERSION"
[ -x "$VENV/bin/moto_server" ] || die "$VENV/bin/moto_server is missing after the install"
printf '%s\n' "$MOTO_VERSION" >"$MARKER"
report
