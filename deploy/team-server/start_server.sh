#!/usr/bin/env bash
# Start the team MLflow tracking server: runs and metrics in PostgreSQL, artifacts in one folder
# that the server reads and writes and serves over HTTP (--serve-artifacts), so the machines
# that run searches need only HTTP access to the server, not to the database or the folder.
#
#   MLFLOW_ARTIFACTS_DIR  (required) artifact folder, e.g. /shared/mlflow-artifacts (created
#                         if absent); keep it on storage that is backed up
#   MLFLOW_HOST           address to bind             (default: 127.0.0.1, this machine only)
#   MLFLOW_PORT           port                        (default: 5000)
#   MLFLOW_WORKERS        server worker processes     (default: 4)
#   MLFLOW_DB_HOST        PostgreSQL host             (default: 127.0.0.1)
#   MLFLOW_DB_PORT        PostgreSQL port             (default: 5432)
#   MLFLOW_DB_NAME        database                    (default: mlflow)
#   MLFLOW_DB_USER        role                        (default: mlflow)
#   PGPASSWORD            the role's password (or a ~/.pgpass line): libpq reads it, so it
#                         is not on the command line (`ps`) nor in the backend store URI
#   MLFLOW                the mlflow program          (default: mlflow on PATH)
# Further arguments go to `mlflow server` as they are (e.g. --allowed-hosts mlflow.example.org).
#
# The server replaces this shell (exec): its pid is this script's pid; stop it with
# kill -TERM <pid>.
set -euo pipefail

artifacts=${MLFLOW_ARTIFACTS_DIR:-}
if [ -z "$artifacts" ]; then
    echo "error: set MLFLOW_ARTIFACTS_DIR to the artifact folder (e.g. /shared/mlflow-artifacts)" >&2
    exit 2
fi
mkdir -p "$artifacts"
if ! [ -w "$artifacts" ]; then
    echo "error: $artifacts is not writable by $(id -un)" >&2
    exit 2
fi
artifacts=$(cd "$artifacts" && pwd -P)  # MLflow resolves a relative path against its cwd

host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
db_uri="postgresql+${MLFLOW_DB_DRIVER:-psycopg2}://${MLFLOW_DB_USER:-mlflow}@${MLFLOW_DB_HOST:-127.0.0.1}:${MLFLOW_DB_PORT:-5432}/${MLFLOW_DB_NAME:-mlflow}"
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}

echo "mlflow server on http://$host:$port: runs in $db_uri, artifacts in $artifacts"
exec ${MLFLOW:-mlflow} server \
    --backend-store-uri "$db_uri" \
    --serve-artifacts --artifacts-destination "$artifacts" \
    --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-4}" \
    "$@"
