#!/usr/bin/env bash
# Runs the benchmarks and prints their figures: the routing benchmark (SQLite), then
# the PostgreSQL benchmark against a throwaway cluster with room for 1,000 pools
# (or the server in BENCH_DATABASE_URL).
#
#   ./scripts/bench.sh            both
#   ./scripts/bench.sh routing    only the SQLite routing benchmark
#   ./scripts/bench.sh postgres   only the PostgreSQL benchmark
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

which=${1:-all}
if [ "$which" = all ] || [ "$which" = routing ]; then
  cargo bench --locked --bench routing
fi
if [ "$which" = all ] || [ "$which" = postgres ]; then
  if [ -z "${BENCH_DATABASE_URL:-}" ]; then
    export PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-1300}
    trap stop_cluster EXIT
    start_cluster
    export BENCH_DATABASE_URL="$PG_URL"
  fi
  cargo bench --locked --bench postgres
fi
