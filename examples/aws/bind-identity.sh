#!/usr/bin/env bash
# The AWS side of examples/aws/workload.yaml: a role that pods of ServiceAccount
# team-a/web may assume, allowed to read their secrets. Pick IRSA or Pod Identity.
set -euo pipefail
ACCOUNT=123456789012
CLUSTER=prod-1
REGION=eu-west-1
NAMESPACE=team-a
SERVICE_ACCOUNT=web
ROLE=team-a-web

# -- IRSA -----------------------------------------------------------------------------------
# irsa-trust-policy.json names the cluster's OIDC provider; print its issuer with:
#   aws eks describe-cluster --name "$CLUSTER" --region "$REGION" --query cluster.identity.oidc.issuer
aws iam create-role --role-name "$ROLE" \
    --assume-role-policy-document file://irsa-trust-policy.json
aws iam put-role-policy --role-name "$ROLE" --policy-name read-web-secrets \
    --policy-document file://secrets-policy.json
# The ServiceAccount carries eks.amazonaws.com/role-arn: arn:aws:iam::$ACCOUNT:role/$ROLE
# (workload.yaml); the CSIDriver must request audience sts.amazonaws.com.

# -- or EKS Pod Identity ----------------------------------------------------------------------
# (eks-pod-identity-agent add-on installed; classes set usePodIdentity: "true" or native
# auth: podIdentity; the CSIDriver must request audience pods.eks.amazonaws.com)
# aws iam create-role --role-name "$ROLE" \
#     --assume-role-policy-document file://pod-identity-trust-policy.json
# aws iam put-role-policy --role-name "$ROLE" --policy-name read-web-secrets \
#     --policy-document file://secrets-policy.json
# aws eks create-pod-identity-association --cluster-name "$CLUSTER" --region "$REGION" \
#     --namespace "$NAMESPACE" --service-account "$SERVICE_ACCOUNT" \
#     --role-arn "arn:aws:iam::$ACCOUNT:role/$ROLE"
