#!/usr/bin/env bash
# Runs the benchmarks and prints their figures: the routing benchmark (SQLite), the
# PostgreSQL benchmark and the lifecycle benchmark, the last two against a throwaway
# cluster with room for 1,000 pools (or the server in BENCH_DATABASE_URL).
#
#   ./scripts/bench.sh            both
#   ./scripts/bench.sh routing    only the SQLite routing benchmark
#   ./scripts/bench.sh postgres   only the PostgreSQL benchmark
#   ./scripts/bench.sh lifecycle  only migrate --all and provisioning
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

which=${1:-all}
if [ "$which" = all ] || [ "$which" = routing ]; then
  cargo bench --locked --bench routing
fi
if [ "$which" != routing ] && [ -z "${BENCH_DATABASE_URL:-}" ]; then
  export PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-1300}
  trap stop_cluster EXIT
  start_cluster
  export BENCH_DATABASE_URL="$PG_URL"
fi
if [ "$which" = all ] || [ "$which" = postgres ]; then
  cargo bench --locked --bench postgres
fi
if [ "$which" = all ] || [ "$which" = lifecycle ]; then
  cargo bench --locked --bench lifecycle
fi
