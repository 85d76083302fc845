#!/usr/bin/env bash
# Run the Java example built by build.sh: `run.sh [host:port]` (default: the sidecar at
# $INTEGRATION_SIDECAR_ADDRESS, else 127.0.0.1:50051).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$here/build/classpath" ] || { echo "run $here/build.sh first" >&2; exit 1; }
exec java -cp "$(cat "$here/build/classpath")" example.Client "$@"
