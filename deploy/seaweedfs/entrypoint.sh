#!/bin/sh
# SeaweedFS for deploy/compose.yaml: render s3.json (the S3 identities) from the environment, then run
# master + volume + filer + S3 gateway in one process. Runnable outside Docker too (variables below).
#
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the archiver's credentials (deploy/veo-archiver.env)
#   S3_CONFIG_TEMPLATE (/etc/seaweedfs/s3.json.template)   S3_CONFIG (/tmp/s3.json)   WEED (weed)
#   WEED_DIR (/data)   WEED_IP (seaweedfs)   WEED_BIND (0.0.0.0)   S3_PORT (8333)
#   RENDER_ONLY=1                               write the config and exit (tests/test_deploy.py uses it)
set -eu

template="${S3_CONFIG_TEMPLATE:-/etc/seaweedfs/s3.json.template}"
config="${S3_CONFIG:-/tmp/s3.json}"

fail() {
  echo "seaweedfs: $*" >&2
  exit 64
}

# The keys are substituted into JSON with sed, so only characters that need no escaping in either are
# allowed; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' makes such a key.
check_key() {
  [ -n "$2" ] || fail "$1 is empty: cp deploy/veo-archiver.env.example deploy/veo-archiver.env and set it"
  case "$2" in
    *[!A-Za-z0-9._~+=/-]*) fail "$1 may contain only letters, digits and . _ ~ + = / -" ;;
  esac
}
check_key AWS_ACCESS_KEY_ID "${AWS_ACCESS_KEY_ID:-}"
check_key AWS_SECRET_ACCESS_KEY "${AWS_SECRET_ACCESS_KEY:-}"

umask 077
sed -e "s|\${AWS_ACCESS_KEY_ID}|${AWS_ACCESS_KEY_ID}|g" \
    -e "s|\${AWS_SECRET_ACCESS_KEY}|${AWS_SECRET_ACCESS_KEY}|g" \
    "$template" >"$config"
[ "${RENDER_ONLY:-}" = "1" ] && exit 0

# -master.telemetry=false: no usage reports leave the machine. The Iceberg and Lance catalogs are off: the
# archiver needs S3 only. -volume.max=0 sizes the number of volumes from the free disk space.
exec "${WEED:-weed}" server \
  -dir="${WEED_DIR:-/data}" \
  -ip="${WEED_IP:-seaweedfs}" \
  -ip.bind="${WEED_BIND:-0.0.0.0}" \
  -master.telemetry=false \
  -master.volumeSizeLimitMB=1024 \
  -volume.max=0 \
  -s3 \
  -s3.port="${S3_PORT:-8333}" \
  -s3.config="$config" \
  -s3.port.iceberg=0 \
  -s3.port.lance=0
