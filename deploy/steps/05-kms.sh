#!/usr/bin/env bash
# 05: the KMS key ring and the symmetric key that decrypts the orgs' provider credentials (the
# onboarding service encrypts with it). Key rings and keys can never be deleted: the names are
# permanent, hence describe || create.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 5; fi

step 5 "KMS key $KMS_KEY_NAME"
exists gcloud kms keyrings describe "$KEYRING" --location="$REGION" --project="$PROJECT" \
  || run gcloud kms keyrings create "$KEYRING" --location="$REGION" --project="$PROJECT"
exists gcloud kms keys describe "$KEY" --keyring="$KEYRING" --location="$REGION" --project="$PROJECT" \
  || run gcloud kms keys create "$KEY" --keyring="$KEYRING" --location="$REGION" --purpose=encryption \
       --project="$PROJECT"
