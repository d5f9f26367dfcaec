#!/usr/bin/env bash
# Side-by-side load benchmark: io_uring vs Sockets transports, default and inline scheduling.
# Usage: bash build/bench.sh [--quick] [--profiles plaintext,json] [--configs iouring,sockets] [--help]
# The work is done by build/bench.py; see benchmarks/README.md "Load benchmarks (build/bench.sh)".
set -uo pipefail
cd "$(dirname "$0")/.."

# The sweep profile opens 4096 connections on each side; server and wrk inherit this limit.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 65536 ]; then
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

# bench.py stops the servers itself; this trap covers bench.py dying without its finally blocks.
pidfile=$(mktemp)
# The servers of one run are up together (runs are interleaved), so the file holds one pid per line.
cleanup() {
  local pid
  for pid in $(cat "$pidfile" 2>/dev/null); do
    if kill -0 "$pid" 2>/dev/null; then
      echo "bench.sh: killing leftover server $pid" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  rm -f "$pidfile"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

BENCH_SERVER_PIDFILE="$pidfile" python3 build/bench.py "$@"
