#!/usr/bin/env bash
# The whole service on one machine: a local Prefect server (SQLite, loopback), the bootstrap,
# and a process worker in the foreground. Ctrl-C stops the worker, then the server.
# The worker, and every flow run it starts, inherit this script's environment: export
# BACKUPFLOW_CONFIG (the settings file) and the S3 credentials before `make serve`
# (docs/service.md walks through it with a local S3).
#
# The API is behind HTTP basic auth (the open-source server has no users of its own, and any
# client of the API reads every block, Secret blocks included). The string is
# PREFECT_API_AUTH_STRING when this shell exports one, else the one kept in
# $PREFECT_HOME/api-auth (mode 0600, made on the first run and reused). It is never put on a
# command line nor printed: the server gets it as PREFECT_SERVER_API_AUTH_STRING, the
# bootstrap and the worker as PREFECT_API_AUTH_STRING, all through their environment.
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
BIN=$PWD/.venv/bin
mkdir -p "$PREFECT_HOME"

auth_file=$PREFECT_HOME/api-auth
if [ -n "${PREFECT_API_AUTH_STRING:-}" ]; then
  auth_note="API auth: PREFECT_API_AUTH_STRING from this shell"
else
  if [ ! -s "$auth_file" ]; then
    (umask 077 && "$BIN/python" -c \
      'import secrets; print("admin:" + secrets.token_urlsafe(24))' >"$auth_file")
  fi
  chmod 600 "$auth_file"
  PREFECT_API_AUTH_STRING=$(<"$auth_file")
  export PREFECT_API_AUTH_STRING
  auth_note="API auth: the user:password in $auth_file (the UI asks for it)"
fi

set -m
# Only the server sees the server's variable; the prefix assignment is the child's
# environment, not its command line.
PREFECT_SERVER_API_AUTH_STRING=$PREFECT_API_AUTH_STRING \
  "$BIN/prefect" server start >"$PREFECT_HOME/server.log" 2>&1 &
server=$!
worker=
stop() {
  # The worker first, then the server. Each runs in its own process group (set -m), where
  # one SIGTERM stops it; without job control a background worker would ignore it.
  if [ -n "$worker" ]; then
    kill "$worker" 2>/dev/null || true
    wait "$worker" 2>/dev/null || true
  fi
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait for the API with the credentials (read from the environment, never from argv): a
# wrong string stops here with one sentence instead of failing later in the bootstrap.
"$BIN/python" - "$server" <<'EOF'
import base64, os, sys, time, urllib.error, urllib.request

url = os.environ["PREFECT_API_URL"] + "/admin/version"
token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
log = os.path.join(os.environ["PREFECT_HOME"], "server.log")
for _ in range(90):
    try:
        os.kill(int(sys.argv[1]), 0)
    except OSError:
        sys.exit(f"the Prefect server stopped while starting; see {log}")
    try:
        urllib.request.urlopen(request, timeout=3).close()
        sys.exit(0)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            sys.exit(
                f"the Prefect API at {url} refused PREFECT_API_AUTH_STRING; is another "
                "server with another auth string on this port?"
            )
    except OSError:
        pass
    time.sleep(1)
sys.exit(f"the Prefect API did not answer within 90 s; see {log}")
EOF

# The bootstrap's output goes to a log: on failure it is shown whole; on success only the
# bootstrap's own lines (what it created or skipped), not `prefect deploy`'s boxes and hints.
bootstrap_log=$PREFECT_HOME/bootstrap.log
if ! "$BIN/python" deployments/bootstrap.py >"$bootstrap_log" 2>&1; then
  cat "$bootstrap_log" >&2
  echo "the bootstrap failed (above; also in $bootstrap_log)" >&2
  exit 1
fi
sed '/^Deploying all flows/,$d' "$bootstrap_log"
deployed=$(grep -c "Deployment '[^']*' successfully" "$bootstrap_log" || true)
echo "$deployed deployments deployed (prefect deploy's output: $bootstrap_log)"
if [ -n "${BACKUPFLOW_CONFIG:-}" ]; then
  echo "settings: BACKUPFLOW_CONFIG=$BACKUPFLOW_CONFIG and this shell's BACKUPFLOW_* variables"
else
  echo "settings: no BACKUPFLOW_CONFIG; the defaults (/var/backups, the real S3 buckets) apply"
fi
echo "$auth_note"
echo "UI: http://127.0.0.1:${PREFECT_SERVER_API_PORT}  (worker running; Ctrl-C to stop)"
echo "in another shell: export PREFECT_API_URL=$PREFECT_API_URL"
if [ -s "$auth_file" ] && [ "$(<"$auth_file")" = "$PREFECT_API_AUTH_STRING" ]; then
  echo "                  export PREFECT_API_AUTH_STRING=\$(cat $auth_file)"
fi
# The worker's own lines and each flow run's log at INFO; PREFECT_LOGGING_LEVEL=DEBUG for more.
# Ctrl-C (or a SIGTERM to this script) stops the worker, then the server.
"$BIN/prefect" worker start --pool backupflow &
worker=$!
wait "$worker"
