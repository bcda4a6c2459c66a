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
# shellcheck source=../lib/venv.sh
. "$SCRIPT_DIR/../lib/venv.sh"
venv_prerequisites "moto $MOTO_VERSION" "$CONSTRAINTS"
venv_lock moto
if installed; then
    log "moto $MOTO_VERSION installed by a concurrent run"
    report
    exit 0
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
