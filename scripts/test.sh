#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# the compiled flow layer must have been built here: its tests fail instead of skipping
export OTSEC_REQUIRE_COMPILED=1
exec python3 -m pytest "$@"
