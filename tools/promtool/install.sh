#!/usr/bin/env bash
# Installs promtool, pinned, into <repo>/.emulators/promtool/promtool: the binary of Debian's
# `prometheus` package (bookworm, PROMETHEUS_DEB_VERSION below), fetched with
# `apt-get download` and unpacked with `dpkg-deb -x`, so nothing is installed system-wide and
# no Prometheus server is started. The tests run it:
#   - `promtool check rules` on deploy/alerts.yml and on the Grafana dashboard's queries
#     (written out as recording rules, so Prometheus' own parser reads every query);
#   - `promtool check metrics` on a real /metrics scrape of a running worker.
#
# Idempotent: when the pinned version is unpacked it only prints the path. Fails loudly when
# apt-get or dpkg-deb is missing, or the pinned package cannot be fetched (then it names the
# fix).
#
# Environment: EMULATORS_DIR overrides <repo>/.emulators.
set -euo pipefail

PROMETHEUS_DEB_VERSION=2.42.0+ds-5+b6

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
EMULATORS_DIR=${EMULATORS_DIR:-$REPO_ROOT/.emulators}
DEST=$EMULATORS_DIR/promtool
BIN=$DEST/promtool
# Written last, holding the unpacked version: a half-finished install is never taken as done.
MARKER=$DEST/.kcl-promtool-version

log() { printf 'promtool install: %s\n' "$*" >&2; }
die() { printf 'promtool install: ERROR: %s\n' "$*" >&2; exit 1; }

if [ -x "$BIN" ] && [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$PROMETHEUS_DEB_VERSION" ]; then
    printf 'promtool ready: %s (Debian prometheus %s)\n' "$BIN" "$PROMETHEUS_DEB_VERSION" >&2
    exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: promtool comes from Debian's prometheus package; on another system put promtool $PROMETHEUS_DEB_VERSION at $BIN and write '$PROMETHEUS_DEB_VERSION' to $MARKER"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg package)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() {
    # As root, apt's download sandbox user cannot write to the temporary directory: fetch as root.
    (cd "$work" && apt-get -q -o APT::Sandbox::User=root download "prometheus=$PROMETHEUS_DEB_VERSION") >&2
}
log "fetching Debian's prometheus $PROMETHEUS_DEB_VERSION (for promtool)"
if ! fetch; then
    # A fresh machine may have no package lists yet.
    log "apt-get download failed; refreshing the package lists (apt-get update) and retrying"
    apt-get -q update >&2 || die "apt-get update failed (is Debian's package mirror reachable? are you root?)"
    fetch || die "apt-get download prometheus=$PROMETHEUS_DEB_VERSION failed: the pinned version may have left the mirror; pin the version 'apt-cache policy prometheus' shows in $0"
fi
deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)
[ -n "$deb" ] || die "apt-get download left no prometheus_*.deb in $work"
dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x $deb failed"
[ -x "$work/root/usr/bin/promtool" ] || die "$deb holds no usr/bin/promtool"
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$work/root/usr/bin/promtool" "$BIN"
got=$("$BIN" --version 2>&1 | head -n 1) || die "$BIN does not run: $got"
case "$got" in
    *"version ${PROMETHEUS_DEB_VERSION%%-*}"*) ;;
    *) die "unpacked '$got', expected promtool ${PROMETHEUS_DEB_VERSION%%-*}" ;;
esac
printf '%s\n' "$PROMETHEUS_DEB_VERSION" >"$MARKER"
printf 'promtool ready: %s (Debian prometheus %s)\n' "$BIN" "$PROMETHEUS_DEB_VERSION" >&2
