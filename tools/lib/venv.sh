# Shared by the installers of pinned Python tools into project-local virtual environments
# (tools/moto/install.sh, tools/deploy-lint/install.sh). Source it after defining `die`.

# Checks that $PYTHON (default python3) is 3.9 or newer with a working venv module, and that the
# constraints file exists. $1: what needs it, for the messages; $2: the constraints file.
venv_prerequisites() {
    PYTHON=${PYTHON:-python3}
    command -v "$PYTHON" >/dev/null 2>&1 \
        || die "'$PYTHON' not found on PATH (need Python 3.9+ with venv; on Debian: apt-get install -y python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
        || die "$PYTHON is $("$PYTHON" --version 2>&1); $1 needs Python 3.9 or newer"
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "$PYTHON has no working venv module (on Debian: apt-get install -y python3-venv)"
    [ -f "$2" ] || die "missing $2"
}

# Serialises concurrent installs (parallel test binaries may all run an installer) on a lock
# file in $EMULATORS_DIR, held until the installer exits. $1: the lock's name.
venv_lock() {
    mkdir -p "$EMULATORS_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$EMULATORS_DIR/.$1-install.lock"
        flock 9
    fi
}
