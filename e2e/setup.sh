#!/usr/bin/env bash
# Create the Python virtual environment .venv at the repository root and
# install e2e/requirements.txt into it.
#
# The script is idempotent: it records a checksum of the requirements file in
# the environment and returns at once when nothing changed, so test runners
# may call it before every run.
#
# Usage: e2e/setup.sh            (then .venv/bin/pytest e2e/chart)
# Environment: PYTHON selects the interpreter that creates .venv (default python3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
requirements="$repo_root/e2e/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup: creating $venv with $("$python" --version 2>&1)" >&2
    "$python" -m venv "$venv"
fi

echo "setup: installing $requirements" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements"

# Written last, so an interrupted install is retried on the next run.
echo "$wanted" >"$stamp"
