#!/usr/bin/env bash
# Register every deployment of prefect.yaml with the Prefect API in $PREFECT_API_URL.
# Idempotent: the work pool is created only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}
POOL=${BACKUPFLOW_WORK_POOL:-backupflow}
if ! "$PREFECT" work-pool inspect "$POOL" >/dev/null 2>&1; then
  "$PREFECT" work-pool create "$POOL" --type process
fi
"$PREFECT" --no-prompt deploy --all
