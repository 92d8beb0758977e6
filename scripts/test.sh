#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and the black-box suite against real SQLite
# files and a real PostgreSQL server.
#
# PostgreSQL: if TEST_DATABASE_URL is set, that server is used (it must allow
# CREATE DATABASE, and have ssl on for the TLS test). Otherwise this script installs
# PostgreSQL from Debian's packages when it is missing, starts a throwaway cluster on
# 127.0.0.1 under a temporary directory, runs the tests, and removes the cluster.
#
# The admin console's tests drive Debian's headless Chromium through chromedriver:
# both are installed when missing.
#
# Then the contract test (scripts/contract.sh): schemathesis against the live
# service, and /docs rendered in headless Chromium.
#
# Then the deploy files (scripts/deploy-check.sh): the Kubernetes manifests and the
# compose file against their schemas.
#
# Extra arguments go to `cargo test` (for example a test name filter); with any,
# the contract test is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  trap stop_cluster EXIT
  start_cluster
  export TEST_DATABASE_URL="$PG_URL"
else
  log "using the PostgreSQL server in TEST_DATABASE_URL"
  # Some tests start small clusters of their own: they need the server's programs.
  ensure_pg_bin
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "Chromium or chromedriver not found: installing them from Debian's packages (for the console tests)"
  apt_install chromium chromium-driver
fi

cargo test --workspace --locked "$@"
# The OpenAPI contract against the live service, and the deploy files against the
# Kubernetes and Compose schemas (both skipped when a test filter is given).
if [ $# -eq 0 ]; then
  ./scripts/contract.sh
  ./scripts/deploy-check.sh
fi
