#!/usr/bin/env bash
# Start, or restart, the MLflow tracking server on the Ray head node.
#
# The server listens on the head's private address (trials on worker nodes log there,
# and the security group admits only cluster nodes) and on 127.0.0.1 (the target of
# `ray attach cluster/aws.yaml --port-forward 5000`, which forwards to localhost on the
# head). Runs and metrics go to SQLite on the head's disk, artifacts to
# s3://$HMLC_BUCKET/mlflow-artifacts through the server.
#
# Environment (all optional except HMLC_BUCKET when HMLC_MLFLOW_ARTIFACTS is unset):
#   HMLC_MLFLOW_HOST        address to listen on (default: first address of `hostname -I`)
#   HMLC_MLFLOW_PORT        port on that address (default 5000)
#   HMLC_MLFLOW_LOCAL_PORT  port on 127.0.0.1 (default: HMLC_MLFLOW_PORT)
#   HMLC_MLFLOW_DIR         directory for mlflow.db, server.log and server.pid (default ~/mlflow)
#   HMLC_MLFLOW_WORKERS     gunicorn worker processes (default 2)
#   HMLC_MLFLOW_ARTIFACTS   artifact destination (default s3://$HMLC_BUCKET/mlflow-artifacts)
set -euo pipefail

if [[ -f "$HOME/.hmlc_cluster.env" ]]; then
  # shellcheck source=/dev/null
  source "$HOME/.hmlc_cluster.env"
fi

port="${HMLC_MLFLOW_PORT:-5000}"
local_port="${HMLC_MLFLOW_LOCAL_PORT:-$port}"
host="${HMLC_MLFLOW_HOST:-$(hostname -I | awk '{print $1}')}"
state_dir="${HMLC_MLFLOW_DIR:-$HOME/mlflow}"
if [[ -z "${HMLC_MLFLOW_ARTIFACTS:-}" && -z "${HMLC_BUCKET:-}" ]]; then
  echo "start_mlflow.sh: set HMLC_BUCKET (in cluster/aws.yaml) or HMLC_MLFLOW_ARTIFACTS" >&2
  exit 1
fi
artifacts="${HMLC_MLFLOW_ARTIFACTS:-s3://${HMLC_BUCKET:-}/mlflow-artifacts}"
mkdir -p "$state_dir"

# Stop the server of an earlier `ray up`. The server runs in its own process group
# (setsid below), so one signal stops the mlflow CLI and its gunicorn processes.
pid_file="$state_dir/server.pid"
if [[ -f "$pid_file" ]]; then
  old_pid="$(cat "$pid_file")"
  if kill -0 -- "-$old_pid" 2>/dev/null; then
    kill -- "-$old_pid"
    for _ in $(seq 1 30); do
      kill -0 -- "-$old_pid" 2>/dev/null || break
      sleep 1
    done
  fi
  rm -f "$pid_file"
fi

# gunicorn accepts several --bind options, and MLflow adds its own bind for --host and --port.
extra_bind=()
if [[ "$host:$port" != "127.0.0.1:$local_port" ]]; then
  extra_bind=(--gunicorn-opts "--bind 127.0.0.1:$local_port")
fi

setsid nohup mlflow server \
  --host "$host" \
  --port "$port" \
  "${extra_bind[@]}" \
  --workers "${HMLC_MLFLOW_WORKERS:-2}" \
  --backend-store-uri "sqlite:///$state_dir/mlflow.db" \
  --artifacts-destination "$artifacts" \
  > "$state_dir/server.log" 2>&1 < /dev/null &
echo $! > "$pid_file"
echo "MLflow server (pid $(cat "$pid_file")) on http://$host:$port and http://127.0.0.1:$local_port"
