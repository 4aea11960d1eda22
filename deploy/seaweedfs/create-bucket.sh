#!/bin/sh
# One-shot job of deploy/compose.yaml: create the bucket named in ARCHIVE_URL (s3://bucket/prefix) through
# the SeaweedFS master (weed shell), so the archiver's S3 identity needs no right to create buckets.
# Idempotent: an existing bucket is left as it is. WEED_MASTER defaults to seaweedfs:9333.
set -eu

fail() {
  echo "create-bucket: $*" >&2
  exit 64
}

case "${ARCHIVE_URL:-}" in
  s3://?*) ;;
  *) fail "ARCHIVE_URL=${ARCHIVE_URL:-}: expected s3://bucket/prefix" ;;
esac
bucket="${ARCHIVE_URL#s3://}"
bucket="${bucket%%/*}"
case "$bucket" in
  *[!a-z0-9.-]*) fail "bucket name $bucket: lower-case letters, digits, . and - only" ;;
esac
master="${WEED_MASTER:-seaweedfs:9333}"
weed="${WEED:-weed}"

if echo "s3.bucket.list" | "$weed" shell -master="$master" 2>/dev/null | grep -q "^ *${bucket}[[:space:]]"; then
  echo "create-bucket: bucket $bucket already exists"
  exit 0
fi
echo "s3.bucket.create -name $bucket" | "$weed" shell -master="$master"
echo "s3.bucket.list" | "$weed" shell -master="$master" 2>/dev/null | grep -q "^ *${bucket}[[:space:]]" \
  || fail "bucket $bucket was not created"
echo "create-bucket: created bucket $bucket"
