#!/usr/bin/env bash
# The production binary carries no test code: the normal dependencies of kcl-worker (what
# `cargo build -p kcl-worker` and deploy/Dockerfile compile) must not enable kcl-core's
# `testing` feature (the stream simulator, the in-memory lease store, the invariant checker)
# nor tokio's `test-util` (paused time). Dev-dependencies do not count: they never reach the
# binary. Exits 1, naming each offender and how it comes in, when one does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tree=$(cargo tree --quiet -p kcl-worker -e features,normal --prefix none)
# The check must see what it judges: kcl-core and tokio, with their features.
for present in 'kcl-core feature "default"' 'tokio feature "rt"'; do
    if ! grep -qF "$present" <<<"$tree"; then
        echo "check-worker-deps: cargo tree -e features,normal -p kcl-worker shows no $present: the check cannot judge" >&2
        exit 1
    fi
done
failed=0
for feature in 'kcl-core feature "testing"' 'tokio feature "test-util"'; do
    if grep -qF "$feature" <<<"$tree"; then
        failed=1
        echo "check-worker-deps: the production worker (package kcl-worker) enables $feature through its normal" >&2
        echo "  dependencies; test code would ship in the binary that deploy/Dockerfile builds. Move it to" >&2
        echo "  [dev-dependencies] of examples/worker/Cargo.toml. How it comes in:" >&2
        cargo tree --quiet -p kcl-worker -e features,normal -i "${feature%% feature*}" >&2 || true
    fi
done
if [[ $failed -ne 0 ]]; then
    exit 1
fi
echo "check-worker-deps: kcl-worker's normal dependencies enable neither kcl-core/testing nor tokio/test-util"
