#!/usr/bin/env bash
# The Azure side of examples/azure/workload.yaml: a user-assigned managed identity that
# pods of ServiceAccount team-a/web may use through workload identity, allowed to read
# the vault's secrets.
set -euo pipefail
RESOURCE_GROUP=team-a-rg
CLUSTER=prod-1
IDENTITY=web-secrets
VAULT=my-kv
NAMESPACE=team-a
SERVICE_ACCOUNT=web

az identity create --name "$IDENTITY" --resource-group "$RESOURCE_GROUP"
CLIENT_ID=$(az identity show --name "$IDENTITY" --resource-group "$RESOURCE_GROUP" \
    --query clientId -o tsv)
ISSUER=$(az aks show --name "$CLUSTER" --resource-group "$RESOURCE_GROUP" \
    --query oidcIssuerProfile.issuerUrl -o tsv)
az identity federated-credential create --name "${NAMESPACE}-${SERVICE_ACCOUNT}" \
    --identity-name "$IDENTITY" --resource-group "$RESOURCE_GROUP" \
    --issuer "$ISSUER" \
    --subject "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}" \
    --audience api://AzureADTokenExchange
# RBAC-model vault; an access-policy vault needs `get` on secrets instead.
az role assignment create --role "Key Vault Secrets User" --assignee "$CLIENT_ID" \
    --scope "$(az keyvault show --name "$VAULT" --query id -o tsv)"
echo "annotate the ServiceAccount: azure.workload.identity/client-id: $CLIENT_ID"
