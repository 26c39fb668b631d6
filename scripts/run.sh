#!/usr/bin/env bash
# Builds braid (release) and starts it on the embedded defaults: data in ./braid-data under the
# repository, listening on 127.0.0.1:5432, or on a free port when 5432 is taken (printed below).
# Extra arguments go to `braid` (see `braid --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/braid-target}"
cargo build --release -p braid-server --bin braid

port=$(python3 - <<'PY'
import socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
if free(5432):
    print(5432)
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
)
echo "braid: data directory $(pwd)/braid-data, listening on 127.0.0.1:${port}"
echo "braid: connect with  psql -h 127.0.0.1 -p ${port} -U postgres"
exec "$CARGO_TARGET_DIR/release/braid" --data-dir ./braid-data --listen "127.0.0.1:${port}" "$@"
