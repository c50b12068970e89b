#!/usr/bin/env bash
# The whole service on one machine: a local Prefect server (SQLite, loopback), the bootstrap,
# and a process worker in the foreground. Ctrl-C stops the worker, then the server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT=${PREFECT_SERVER_API_PORT:-4200}
export PREFECT_API_URL=http://127.0.0.1:${PREFECT_SERVER_API_PORT}/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export BACKUPFLOW_PROJECT_DIR=$PWD
BIN=.venv/bin
set -m
"$BIN/prefect" server start >"$PREFECT_HOME/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 60); do
  curl -fs "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
  sleep 1
done
"$BIN/python" deployments/bootstrap.py
echo "UI: http://127.0.0.1:${PREFECT_SERVER_API_PORT}  (worker running; Ctrl-C to stop)"
"$BIN/prefect" worker start --pool backupflow
