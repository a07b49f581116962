#!/usr/bin/env bash
# The Google side of examples/gcp/workload.yaml: let pods of ServiceAccount team-a/web
# read their secrets through GKE workload identity.
set -euo pipefail
PROJECT=my-project
NAMESPACE=team-a
SERVICE_ACCOUNT=web
GSA=web-secrets@${PROJECT}.iam.gserviceaccount.com

# -- with impersonation (the ServiceAccount's iam.gke.io/gcp-service-account annotation) ----
gcloud iam service-accounts create web-secrets --project "$PROJECT"
gcloud iam service-accounts add-iam-policy-binding "$GSA" \
    --project "$PROJECT" \
    --role roles/iam.workloadIdentityUser \
    --member "serviceAccount:${PROJECT}.svc.id.goog[${NAMESPACE}/${SERVICE_ACCOUNT}]"
for secret in web-db-password web-config; do
    gcloud secrets add-iam-policy-binding "$secret" --project "$PROJECT" \
        --role roles/secretmanager.secretAccessor --member "serviceAccount:${GSA}"
done
gcloud secrets add-iam-policy-binding web-api-key --project "$PROJECT" --location europe-west4 \
    --role roles/secretmanager.secretAccessor --member "serviceAccount:${GSA}"

# -- or without impersonation: grant the federated principal directly and drop the
# annotation from the ServiceAccount.
# PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format 'value(projectNumber)')
# gcloud secrets add-iam-policy-binding web-db-password --project "$PROJECT" \
#     --role roles/secretmanager.secretAccessor \
#     --member "principal://iam.googleapis.com/projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/${PROJECT}.svc.id.goog/subject/ns/${NAMESPACE}/sa/${SERVICE_ACCOUNT}"
