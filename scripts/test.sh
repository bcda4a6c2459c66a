#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what it needs itself (DynamoDB Local, the advisory checker), then checks formatting,
# lints, RustSec advisories (offline, against ../shared/advisory-db) and runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "emulators (DynamoDB Local 3.3.0 on Java 17, moto server for SQS)"
bash .ci/install-emulators.sh

step "formatting"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "publishable crates: cargo package (builds each packaged crate alone) and the API docs without warnings"
# --allow-dirty: so that a local run with uncommitted edits checks them too (a CI checkout is
# clean, and the emulators' directory is ignored).
# cargo extracts the packaged crates under $CARGO_HOME/registry/src/-<hash of the temporary
# registry's path>/ and reuses an extraction of the same version left by an earlier run, which
# is stale once the sources changed (kcl-adapter is then built against an old kcl-core): remove
# those extractions first. crates.io's extractions (index.crates.io-*) are not touched.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/kcl-core-* "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/kcl-adapter-*
cargo package -p kcl-core -p kcl-adapter --allow-dirty
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features

step "the production worker carries no test code (kcl-worker's normal dependencies)"
bash scripts/check-worker-deps.sh

step "deploy files: cfn-lint on the ECS template, hadolint on the Dockerfile (pinned: tools/deploy-lint), promtool on the alert rules and scrape config (pinned: tools/promtool)"
bash tools/deploy-lint/install.sh
lint_venv="${EMULATORS_DIR:-.emulators}/deploy-lint-venv/bin"
"$lint_venv/cfn-lint" deploy/ecs-service.yaml
"$lint_venv/hadolint" deploy/Dockerfile
# promtool (Debian's prometheus package, pinned and unpacked into .emulators/promtool): the
# alert rules here; the tests (deploy_promtool) also parse every dashboard query with it and
# run `promtool check metrics` on a running worker's scrape.
bash tools/promtool/install.sh
promtool="$PWD/${EMULATORS_DIR:-.emulators}/promtool/promtool"
case "${EMULATORS_DIR:-}" in /*) promtool="$EMULATORS_DIR/promtool/promtool" ;; esac
"$promtool" check rules deploy/alerts.yml
# The scrape config (with its rule_files, relative to deploy/); the file_sd targets are written
# by the ECS discovery sidecar at run time, so promtool only warns that they are missing here.
(cd deploy && "$promtool" check config prometheus.yml)

step "RustSec advisories (offline, against ../shared/advisory-db)"
# cargo-audit is built once per machine (several minutes), then reused.
export KCL_TOOLS_DIR="${KCL_TOOLS_DIR:-$HOME/.cache/kcl-tools}"
bash .ci/audit.sh

step "tests (unit, contract, scenario, seeded soak, DynamoDB Local, fleet of processes)"
# The output is kept to add up the test binaries' results into one closing line (the last
# binary cargo runs, a crate's doctests, has none of its own).
results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0
cargo test --workspace --all-features --no-fail-fast 2>&1 | tee "$results" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$results"
exit "$status"
