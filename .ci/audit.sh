#!/usr/bin/env bash
# Offline RustSec advisory check: Cargo.lock against the advisory-db snapshot in
# ../shared/advisory-db (beside the repository; plain files, not a git checkout). Exits non-zero
# on any vulnerability and prints the findings (crate, version, advisory, fix); warnings
# (unmaintained, unsound) are printed but do not fail. Nothing is fetched: the database is
# used as it is (--no-fetch, --stale) and the yanked-crate check, which needs the crates.io
# index, is off (--no-yanked).
#
# cargo-audit (pinned below) is installed with `cargo install --locked` into $KCL_TOOLS_DIR
# (default <repo>/.tools, git-ignored) the first time; later runs reuse it. The install compiles
# about 250 crates: several minutes on a 2-core machine. Point KCL_TOOLS_DIR at a directory
# that outlives the clone (e.g. ~/.cache/kcl-tools) to pay that once per machine.
#
# Environment:
#   KCL_ADVISORY_DB   advisory database directory (default: <repo>/../shared/advisory-db)
#   KCL_TOOLS_DIR     install root for cargo-audit (default: <repo>/.tools)
#
# To see which dependency pulls a flagged crate in: cargo tree -i <crate>@<version>
set -euo pipefail

CARGO_AUDIT_VERSION=0.22.2

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ADVISORY_DB=${KCL_ADVISORY_DB:-$(dirname "$REPO_ROOT")/shared/advisory-db}
TOOLS_DIR=${KCL_TOOLS_DIR:-$REPO_ROOT/.tools}
LOCKFILE=$REPO_ROOT/Cargo.lock
CARGO_AUDIT=$TOOLS_DIR/bin/cargo-audit

log() { printf 'audit: %s\n' "$*" >&2; }
die() { printf 'audit: ERROR: %s\n' "$*" >&2; exit 2; }

# --- inputs -----------------------------------------------------------------------------
if [ ! -d "$ADVISORY_DB/crates" ]; then
    die "no advisory database at $ADVISORY_DB (expected the RustSec advisory-db snapshot, with a crates/ folder, in shared/advisory-db beside the repository; set KCL_ADVISORY_DB to use another copy)"
fi
[ -f "$LOCKFILE" ] || die "$LOCKFILE not found (run cargo generate-lockfile)"
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
snapshot=$(head -n 1 "$ADVISORY_DB/SNAPSHOT" 2>/dev/null || echo "no SNAPSHOT file")
log "advisory database: $ADVISORY_DB ($snapshot)"

# --- cargo-audit, pinned, installed once ---------------------------------------------------
installed_version() {
    [ -x "$CARGO_AUDIT" ] || return 0
    "$CARGO_AUDIT" --version 2>/dev/null | awk '{print $2}'
}

if [ "$(installed_version)" != "$CARGO_AUDIT_VERSION" ]; then
    mkdir -p "$TOOLS_DIR"
    # Parallel runs wait for one install instead of compiling twice.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS_DIR/.install.lock"
        flock 9
    fi
    if [ "$(installed_version)" != "$CARGO_AUDIT_VERSION" ]; then
        log "installing cargo-audit $CARGO_AUDIT_VERSION into $TOOLS_DIR (several minutes on 2 cores)"
        started=$(date +%s)
        # No default features: they only add binary scanning, which this check does not use.
        cargo install cargo-audit --version "$CARGO_AUDIT_VERSION" --locked --no-default-features \
            --root "$TOOLS_DIR" --force >&2 \
            || die "cargo install cargo-audit $CARGO_AUDIT_VERSION failed (it needs crates.io to download the sources)"
        log "installed cargo-audit $CARGO_AUDIT_VERSION in $(($(date +%s) - started)) s"
    fi
    exec 9>&-
    [ "$(installed_version)" = "$CARGO_AUDIT_VERSION" ] || die "$CARGO_AUDIT does not report version $CARGO_AUDIT_VERSION after the install"
else
    log "cargo-audit $CARGO_AUDIT_VERSION already installed in $TOOLS_DIR"
fi

# --- the check ----------------------------------------------------------------------------
log "checking $LOCKFILE"
status=0
"$CARGO_AUDIT" audit \
    --db "$ADVISORY_DB" --no-fetch --stale --no-yanked \
    --file "$LOCKFILE" --color never || status=$?

if [ "$status" -eq 0 ]; then
    log "OK: no known vulnerability in Cargo.lock"
else
    log "FAILED: vulnerable crates in Cargo.lock (listed above); find who pulls one in with: cargo tree -i <crate>@<version>"
fi
exit "$status"
