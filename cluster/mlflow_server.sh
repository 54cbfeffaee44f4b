#!/usr/bin/env bash
# Start the MLflow tracking server that pursuhint sweeps log to; bound to 127.0.0.1 unless told otherwise.
#
# Usage: cluster/mlflow_server.sh [--background | --stop | --status | --help]
#   (no option)    run in the foreground until Ctrl-C
#   --background   start detached, return once the server answers /health; writes its PID, log and
#                  client URI under PURSUHINT_MLFLOW_DIR. A server already running there is left alone.
#   --stop         stop the server that --background started (its process group, by the PID file)
#   --status       print the URI and exit 0 if that server answers, 1 if not
#
# Settings (environment variables, all optional):
#   PURSUHINT_MLFLOW_HOST           interface to bind            127.0.0.1 (this machine only)
#   PURSUHINT_MLFLOW_PORT           port                         5000
#   PURSUHINT_MLFLOW_DIR            state folder                 ~/.pursuhint/mlflow
#   PURSUHINT_MLFLOW_BACKEND        backend store URI            sqlite:///$PURSUHINT_MLFLOW_DIR/mlflow.db
#   PURSUHINT_MLFLOW_ARTIFACTS      where artifacts are stored, served through the server (clients
#                                   need no access of their own): a folder or s3://bucket/prefix
#                                                                $PURSUHINT_MLFLOW_DIR/artifacts
#   PURSUHINT_MLFLOW_ALLOWED_HOSTS  Host headers to accept (mlflow's --allowed-hosts); default:
#                                   mlflow's own (localhost and private IPs). Set it when clients
#                                   use a DNS name, e.g. a Kubernetes service name.
#   PURSUHINT_MLFLOW_WORKERS        server worker processes      2
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION
#                                   MLflow's server-side job runner (GenAI jobs) false
#                                   pursuhint runs none; its seven queue consumers would
#                                   otherwise keep more than one core busy while idle
#   MLFLOW, PYTHON                  executables                  mlflow, python3 on PATH
#
# Exposure: the default binds to loopback, reachable only through an SSH tunnel
# (ssh -L 5000:127.0.0.1:5000 HOST). On a cluster whose workers must log to it, bind the head's
# PRIVATE address (PURSUHINT_MLFLOW_HOST=$(hostname -I | awk '{print $1}')) inside a VPC whose
# firewall admits only the cluster's own nodes. The server has no authentication: never bind a
# public address or open its port to the internet.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

mode=foreground
case "${1:-}" in
  "") ;;
  --background) mode=background ;;
  --stop) mode=stop ;;
  --status) mode=status ;;
  -h|--help) usage; exit 0 ;;
  *) echo "mlflow_server.sh: unknown option '$1'; valid: --background, --stop, --status, --help" >&2; exit 2 ;;
esac
if [ "$#" -gt 1 ]; then
  echo "mlflow_server.sh: takes at most one option, got $#: $*" >&2; exit 2
fi

HOST="${PURSUHINT_MLFLOW_HOST:-127.0.0.1}"
PORT="${PURSUHINT_MLFLOW_PORT:-5000}"
DIR="${PURSUHINT_MLFLOW_DIR:-$HOME/.pursuhint/mlflow}"
BACKEND="${PURSUHINT_MLFLOW_BACKEND:-sqlite:///$DIR/mlflow.db}"
ARTIFACTS="${PURSUHINT_MLFLOW_ARTIFACTS:-$DIR/artifacts}"
WORKERS="${PURSUHINT_MLFLOW_WORKERS:-2}"
MLFLOW="${MLFLOW:-mlflow}"
PYTHON="${PYTHON:-python3}"
# The job runner's consumers poll their queue without pause: >1 core of an idle head node, for jobs pursuhint
# never submits. Off unless the user turns it on.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
PID_FILE="$DIR/server.pid"
LOG_FILE="$DIR/server.log"
URI_FILE="$DIR/uri"

case "$PORT" in
  ''|*[!0-9]*) echo "mlflow_server.sh: PURSUHINT_MLFLOW_PORT='$PORT' is not a port number; use e.g. 5000" >&2; exit 2 ;;
esac

# Clients connect to the bound address; a wildcard bind is probed and advertised through loopback.
case "$HOST" in
  0.0.0.0|::|'[::]') CLIENT_HOST=127.0.0.1 ;;
  *) CLIENT_HOST="$HOST" ;;
esac
URI="http://$CLIENT_HOST:$PORT"

healthy() {
  "$PYTHON" - "$URI/health" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
EOF
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

case "$mode" in
  status)
    if healthy; then echo "$URI"; exit 0; fi
    echo "no MLflow server answers at $URI" >&2; exit 1 ;;
  stop)
    if pid="$(running_pid)"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      rm -f "$PID_FILE"
      echo "stopped the MLflow server (pid $pid)"
    else
      rm -f "$PID_FILE"
      echo "no MLflow server started by this script is running (no live pid in $PID_FILE)"
    fi
    exit 0 ;;
esac

case "$HOST" in
  127.*|localhost|::1) ;;
  10.*|192.168.*|172.1[6-9].*|172.2[0-9].*|172.3[01].*)
    echo "note: MLflow binds the private address $HOST; only the cluster's own nodes may reach port $PORT" >&2 ;;
  0.0.0.0|::|'[::]')
    echo "note: MLflow binds every interface of this machine (in a container: the pod's address); a firewall" >&2
    echo "or a ClusterIP Service must keep port $PORT away from everything but the cluster (no auth)." >&2 ;;
  *)
    echo "WARNING: MLflow binds $HOST, which is not a loopback or private address. The server has no" >&2
    echo "authentication: make sure no firewall rule lets the internet reach port $PORT." >&2 ;;
esac

if ! command -v "$MLFLOW" >/dev/null 2>&1; then
  echo "mlflow_server.sh: '$MLFLOW' not found; install pursuhint (it depends on mlflow) or set MLFLOW" >&2
  exit 2
fi
mkdir -p "$DIR"
case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS" ;; esac

args=(server --host "$HOST" --port "$PORT" --workers "$WORKERS"
      --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS")
if [ -n "${PURSUHINT_MLFLOW_ALLOWED_HOSTS:-}" ]; then
  args+=(--allowed-hosts "$PURSUHINT_MLFLOW_ALLOWED_HOSTS")
fi

if [ "$mode" = foreground ]; then
  echo "MLflow at $URI (backend $BACKEND, artifacts $ARTIFACTS); Ctrl-C stops it" >&2
  exec "$MLFLOW" "${args[@]}"
fi

# --background
if pid="$(running_pid)"; then
  echo "$URI" > "$URI_FILE"
  echo "MLflow server already running (pid $pid) at $URI"
  exit 0
fi
if healthy; then
  echo "mlflow_server.sh: something not started by this script already answers at $URI; stop it or set PURSUHINT_MLFLOW_PORT" >&2
  exit 1
fi
# A new session makes the server its own process group, so --stop can end it and its workers together.
setsid nohup "$MLFLOW" "${args[@]}" >"$LOG_FILE" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$PID_FILE"
for _ in $(seq 120); do
  if healthy; then
    echo "$URI" > "$URI_FILE"
    echo "MLflow server started (pid $pid) at $URI; log $LOG_FILE"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$PID_FILE"
    echo "mlflow_server.sh: the MLflow server exited during start-up; last lines of $LOG_FILE:" >&2
    tail -n 20 "$LOG_FILE" >&2
    exit 1
  fi
  sleep 0.5
done
echo "mlflow_server.sh: the MLflow server (pid $pid) did not answer $URI/health within 60 s; see $LOG_FILE" >&2
exit 1
