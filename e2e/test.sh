#!/usr/bin/env bash
# The test command: every test of the project, Rust and Python, against real components on
# loopback. Sets up the Python virtual environment (Helm's Go library through helm-python-sdk,
# pytest) and a kubectl when the machine has none, then runs cargo's tests and the chart tests.
set -euo pipefail
cd "$(dirname "$0")/.."

e2e/setup.sh
# shellcheck source=/dev/null
source .venv/bin/activate

echo "== cargo test"
cargo test --workspace --locked

echo "== chart tests"
python -m pytest -q e2e/chart
