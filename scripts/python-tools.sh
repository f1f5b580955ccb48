#!/usr/bin/env bash
# Creates the Python virtual environment the tests use, target/pyenv, with the tools
# pinned in scripts/python-tools.txt: schemathesis fuzzes the API from its OpenAPI
# document, the standardwebhooks reference library verifies the signed requests, and
# Playwright drives Debian's chromium in the dashboard's browser test.
# Run by scripts/test.sh; the signing test runs it too when the environment is missing.
# Does nothing when the environment already holds exactly these pins.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYENV=target/pyenv
command -v python3 >/dev/null 2>&1 || { echo "python-tools.sh: python3 is not installed" >&2; exit 1; }
if cmp -s scripts/python-tools.txt "$PYENV/.installed" 2>/dev/null; then
    exit 0
fi
if [[ ! -x $PYENV/bin/python ]]; then
    mkdir -p target
    python3 -m venv "$PYENV"
fi
"$PYENV/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/python-tools.txt
"$PYENV/bin/python" -c 'import standardwebhooks, schemathesis, kubernetes_validate, jsonschema, yaml, playwright'
cp scripts/python-tools.txt "$PYENV/.installed"
