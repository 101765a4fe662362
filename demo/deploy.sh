#!/bin/sh
# Demo backend of Countersign's deploy tool: records the deploy it was asked
# for in "$COUNTERSIGN_DATA_DIR/deploys.log" and says what it did.
# Countersign runs it without a shell, one argument each:
#   deploy.sh SERVICE VERSION ENVIRONMENT
set -eu
umask 077 # the log lives in the data directory, which only Countersign reads

if [ "$#" -ne 3 ]; then
	echo "usage: $0 SERVICE VERSION ENVIRONMENT" >&2
	exit 64
fi
service=$1
version=$2
environment=$3
: "${COUNTERSIGN_DATA_DIR:?COUNTERSIGN_DATA_DIR is not set}"

log="$COUNTERSIGN_DATA_DIR/deploys.log"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '%s\t%s\t%s\t%s\n' "$now" "$service" "$version" "$environment" >>"$log"
printf 'deployed %s version %s to %s at %s (logged to %s)\n' \
	"$service" "$version" "$environment" "$now" "$log"
