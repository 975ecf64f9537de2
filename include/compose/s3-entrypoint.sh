#!/bin/sh
# SeaweedFS S3 with one admin identity whose keys come from the environment (.env), never from a file in git.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY in .env}" "${S3_SECRET_KEY:?set S3_SECRET_KEY in .env}"
umask 077
printf '{"identities":[{"name":"airloop","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
  "$S3_ACCESS_KEY" "$S3_SECRET_KEY" > /tmp/s3.json
exec weed "$@"
