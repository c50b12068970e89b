#!/bin/bash
# Create the application's database on a fresh SQL Server (idempotent); see create-database.sql.
set -euo pipefail
/opt/mssql-tools18/bin/sqlcmd -C -S mssql -U sa -P "$MSSQL_SA_PASSWORD" -b \
  -v DATABASE="$DATABASE" -i /init/create-database.sql
