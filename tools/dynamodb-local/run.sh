#!/usr/bin/env bash
# Installs (if needed) and runs DynamoDB Local 3.3.0 in the foreground through Launcher:
# in-memory, shared DB, telemetry off, API on 127.0.0.1:PORT and the control server
# (POST /rollover, POST /dilate?ms=N, GET /health) on 127.0.0.1:CONTROL_PORT.
#
# Usage: tools/dynamodb-local/run.sh [PORT] [CONTROL_PORT]     (defaults 8000 8001; 0 = any free port)
#
# stdout carries exactly one line, "READY port=P control=C", once both servers listen
# (install output and server logs go to stderr). Stop with Ctrl-C or SIGTERM. When stdin
# is a terminal or a pipe, the launcher also exits when stdin reaches EOF (so a parent
# process that dies takes it down); with stdin from a file or /dev/null it does not watch.
set -euo pipefail

PORT=${1:-8000}
CONTROL_PORT=${2:-8001}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
EMULATORS_DIR=${EMULATORS_DIR:-$REPO_ROOT/.emulators}
export EMULATORS_DIR

case "$PORT$CONTROL_PORT" in
    *[!0-9]*) echo "usage: $0 [PORT] [CONTROL_PORT]" >&2; exit 2 ;;
esac

bash "$SCRIPT_DIR/install.sh" >&2

ENV_FILE=$EMULATORS_DIR/dynamodb-local.env
[ -f "$ENV_FILE" ] || { echo "run.sh: $ENV_FILE missing after install" >&2; exit 1; }
# KEY=VALUE lines written by install.sh; read them without evaluating anything.
while IFS='=' read -r key value; do
    case "$key" in
        DYNAMODB_LOCAL_LIB) DDB_LIB=$value ;;
        DYNAMODB_LOCAL_CLASSPATH) DDB_CP=$value ;;
        JAVA) JAVA=$value ;;
    esac
done <"$ENV_FILE"
: "${DDB_LIB:?missing in $ENV_FILE}" "${DDB_CP:?missing in $ENV_FILE}" "${JAVA:?missing in $ENV_FILE}"

extra=()
if [ ! -t 0 ] && [ ! -p /dev/stdin ]; then
    extra+=(--no-stdin-watch)
fi

exec "$JAVA" -Xss1m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.library.path="$DDB_LIB" -Dsqlite4java.library.path="$DDB_LIB" \
    -cp "$DDB_CP" Launcher --port "$PORT" --control-port "$CONTROL_PORT" ${extra[@]+"${extra[@]}"}
