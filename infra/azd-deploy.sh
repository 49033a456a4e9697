#!/usr/bin/env bash
# `azd deploy galbridge`, retried with backoff while the role assignments of a just-provisioned app
# propagate. The first `azd up` deploys minutes after main.bicep created the identity's Storage Blob
# Data Owner assignment; Flex Consumption writes the package with that identity, and until the
# assignment is effective the deployment fails with 403 (BlobUploadFailedException /
# AuthorizationPermissionMismatch). azd does not retry it, so:
#
#   azd up || bash infra/azd-deploy.sh      # first deployment
#   bash infra/azd-deploy.sh                # or any later one
#
# Only permission errors are retried; the defaults (6 attempts, 30 s doubling) wait up to about
# 15 minutes in all. Same policy as infra/deploy-zip.sh (GitHub workflow, az CLI).
set -euo pipefail

ATTEMPTS=${GALBRIDGE_DEPLOY_ATTEMPTS:-6}
DELAY=${GALBRIDGE_DEPLOY_FIRST_DELAY:-30}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

attempt=1
while :; do
    echo "azd-deploy: attempt $attempt of $ATTEMPTS"
    set +e
    azd deploy galbridge --no-prompt 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    [ "$status" -eq 0 ] && break
    if ! grep -Eqi '403|AuthorizationPermissionMismatch|AuthorizationFailure|BlobUploadFailed' "$log"; then
        echo "azd-deploy: failed, and not with a permission error: not retrying" >&2
        exit "$status"
    fi
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
        echo "azd-deploy: still 403 after $ATTEMPTS attempts: check the identity's Storage Blob Data Owner role on the storage account" >&2
        exit "$status"
    fi
    echo "azd-deploy: permission error, probably role assignments still propagating; retrying in ${DELAY}s"
    sleep "$DELAY"
    attempt=$((attempt + 1))
    DELAY=$((DELAY * 2))
done
# The URL as provisioned (main.bicep output FUNCTION_APP_URL, from the site's defaultHostName).
azd env get-value FUNCTION_APP_URL 2>/dev/null | sed 's/^/azd-deploy: done: /' || true
