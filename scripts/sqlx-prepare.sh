#!/usr/bin/env bash
# Regenerates .sqlx/, the query data that lets the checked sqlx macros build without a
# database (CI, Docker). Run it after changing a query or a migration, and commit .sqlx/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
admin=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=${SQLX_PREPARE_DB:-courier_sqlx_prepare}  # a different name lets two checkouts prepare at once
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url="${admin%/*}/$db"
for migration in migrations/*.sql; do psql "$url" -q -v ON_ERROR_STOP=1 -f "$migration"; done
rm -rf .sqlx && mkdir .sqlx
# The macros write one file per query into SQLX_OFFLINE_DIR while checking online.
touch crates/*/src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="$url" cargo check --workspace --all-targets
psql "$admin" -qc "DROP DATABASE $db"
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
