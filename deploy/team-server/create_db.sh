#!/usr/bin/env bash
# Create (or bring up to date) the PostgreSQL role and database of the team MLflow server.
# Idempotent: run it again to change the password; nothing else changes on a second run.
#
#   MLFLOW_DB_PASSWORD=...  (required) password of the role, read from the environment so it
#                           is not on any command line
#   MLFLOW_DB_USER          role name      (default: mlflow)
#   MLFLOW_DB_NAME          database name  (default: mlflow)
#   PSQL                    psql to run    (default: psql on PATH)
#
# It connects as a PostgreSQL superuser (or a role with CREATEROLE and CREATEDB) with libpq's
# usual variables (PGHOST, PGPORT, PGUSER, PGPASSWORD / ~/.pgpass), e.g. on the database host
#   sudo -u postgres env MLFLOW_DB_PASSWORD=... deploy/team-server/create_db.sh
# The role owns the database (so MLflow can create its tables in schema public); other roles
# lose the right to connect to it.
set -euo pipefail

user=${MLFLOW_DB_USER:-mlflow}
db=${MLFLOW_DB_NAME:-mlflow}
psql=${PSQL:-psql}
if [ -z "${MLFLOW_DB_PASSWORD:-}" ]; then
    echo "error: set MLFLOW_DB_PASSWORD (the password of role '$user')" >&2
    exit 2
fi
for name in "$user" "$db"; do
    if ! [[ $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]]; then
        echo "error: '$name': use lower-case letters, digits and _ for role and database names" >&2
        exit 2
    fi
done

# psql interpolates :'name' (as a quoted literal) outside dollar-quoting only, hence \gexec:
# each SELECT yields the statement to run, or no row when there is nothing to do.
"$psql" -X -q -v ON_ERROR_STOP=1 -d postgres -v user="$user" -v db="$db" <<'SQL'
\getenv password MLFLOW_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'user', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'db', :'user', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'user') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'db', :'user') \gexec
SQL
echo "role '$user' and database '$db' are ready"
