#!/bin/sh
# The two S3 buckets backupflow writes (the settings' defaults), on the compose file's MinIO:
# the secondary, and the DR bucket with Object Lock (it can only be enabled at creation).
# Idempotent: an existing bucket is left as it is.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/workload-optimization-backups
mc mb --ignore-existing --with-lock local/dr-workload-optimization-backups
mc ls local
