#!/usr/bin/env bash
# Deploys dist/galbridge.zip to the Flex Consumption app with the Azure CLI (signed in: `az login`
# locally, azure/login in the GitHub workflow), retrying with backoff while the role assignments of a
# deployment made minutes ago propagate, then prints the app's URL as Azure reports it.
#
#   bash infra/deploy-zip.sh <resource-group> <function-app> [zip]
#
# Why retry: Flex Consumption writes the package into the deployment container with the app's own
# identity; right after provisioning, its Storage Blob Data Owner assignment may not be effective yet
# and the deployment fails with 403 (BlobUploadFailedException / AuthorizationPermissionMismatch).
# Role assignment changes can take many minutes to take effect, because Azure Resource Manager caches
# them (https://learn.microsoft.com/azure/role-based-access-control/troubleshooting). With the
# defaults (6 attempts, 30 s doubling) the last attempt starts about 15 minutes after the first.
# Any other failure is not retried.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: bash infra/deploy-zip.sh <resource-group> <function-app> [zip]" >&2
    exit 2
fi
RESOURCE_GROUP=$1
APP=$2
ZIP=${3:-dist/galbridge.zip}
ATTEMPTS=${GALBRIDGE_DEPLOY_ATTEMPTS:-6}
DELAY=${GALBRIDGE_DEPLOY_FIRST_DELAY:-30}

[ -f "$ZIP" ] || { echo "deploy: no package at $ZIP (bash infra/package.sh)" >&2; exit 2; }

attempt=1
while :; do
    echo "deploy: attempt $attempt of $ATTEMPTS: $ZIP -> $APP"
    set +e
    output=$(az functionapp deployment source config-zip --resource-group "$RESOURCE_GROUP" \
        --name "$APP" --src "$ZIP" 2>&1)
    status=$?
    set -e
    echo "$output"
    [ "$status" -eq 0 ] && break
    if ! grep -Eqi '403|AuthorizationPermissionMismatch|AuthorizationFailure|BlobUploadFailed' <<<"$output"; then
        echo "deploy: failed, and not with a permission error: not retrying" >&2
        exit "$status"
    fi
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
        echo "deploy: still 403 after $ATTEMPTS attempts: check the identity's Storage Blob Data Owner role on the storage account" >&2
        exit "$status"
    fi
    echo "deploy: permission error, probably role assignments still propagating; retrying in ${DELAY}s"
    sleep "$DELAY"
    attempt=$((attempt + 1))
    DELAY=$((DELAY * 2))
done

# The URL from Azure, never built from the app name (the default host name is not always
# <app>.azurewebsites.net).
host=$(az functionapp show --resource-group "$RESOURCE_GROUP" --name "$APP" --query defaultHostName -o tsv)
echo "deploy: done: https://$host (POST /api/sync, GET /api/status; function key: az functionapp keys list)"
