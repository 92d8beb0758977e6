#!/usr/bin/env bash
# Runs the benchmarks and prints their figures: the routing benchmark (SQLite), the
# PostgreSQL benchmark and the lifecycle benchmark, the last two against a throwaway
# cluster with max_connections=200 (or the server in BENCH_DATABASE_URL). The
# PostgreSQL benchmark runs the release binary, wrk and pgbench as processes; wrk
# is installed from Debian's packages when missing.
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
  export PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-200}
  trap stop_cluster EXIT
  start_cluster
  export BENCH_DATABASE_URL="$PG_URL"
  export BENCH_PGBENCH="$PG_BIN/pgbench"
fi
if [ "$which" = all ] || [ "$which" = postgres ]; then
  command -v wrk >/dev/null || { log "wrk not found: installing it from Debian's packages"; apt_install wrk; }
  cargo build --locked --release
  export BENCH_ROUTER_BIN="$PWD/target/release/tenant-router"
  cargo bench --locked --bench postgres
fi
if [ "$which" = all ] || [ "$which" = lifecycle ]; then
  cargo bench --locked --bench lifecycle
fi
