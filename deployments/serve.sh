#!/usr/bin/env bash
# The whole service on one machine: a local Prefect server (SQLite, loopback), the bootstrap,
# and a process worker in the foreground. Ctrl-C stops the worker, then the server.
# The worker, and every flow run it starts, inherit this script's environment: export
# BACKUPFLOW_CONFIG (the settings file) and the S3 credentials before `make serve`
# (docs/service.md walks through it with a local S3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT=${PREFECT_SERVER_API_PORT:-4200}
export PREFECT_API_URL=http://127.0.0.1:${PREFECT_SERVER_API_PORT}/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-5}
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
if [ -n "${BACKUPFLOW_CONFIG:-}" ]; then
  echo "settings: BACKUPFLOW_CONFIG=$BACKUPFLOW_CONFIG and this shell's BACKUPFLOW_* variables"
else
  echo "settings: no BACKUPFLOW_CONFIG; the defaults (/var/backups, the real S3 buckets) apply"
fi
echo "UI: http://127.0.0.1:${PREFECT_SERVER_API_PORT}  (worker running; Ctrl-C to stop)"
echo "in another shell: export PREFECT_API_URL=$PREFECT_API_URL"
"$BIN/prefect" worker start --pool backupflow
