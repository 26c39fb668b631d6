#!/usr/bin/env bash
# Driver test: psycopg 3 against the real braid binary.
# Creates a virtualenv under the target directory, installs psycopg[binary] into it (PyPI),
# then runs test_psycopg.py, which starts braid on a temporary data dir and a free port.
# Usage: server/tests/psycopg/run.sh   (set BRAID_BIN to use a specific binary)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${BRAID_BIN:-}" ]]; then
  (cd "$root" && cargo build -q -p braid-server --bin braid)
  export BRAID_BIN="$target/debug/braid"
fi
venv="$target/psycopg-venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
  "$venv/bin/pip" install -q 'psycopg[binary]>=3.1,<4'
fi
exec "$venv/bin/python" "$here/test_psycopg.py"
