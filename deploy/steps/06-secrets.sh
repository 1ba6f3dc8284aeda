#!/usr/bin/env bash
# 06: the service's own secrets, created by name only, without a value: the operator adds versions
# (no value ever passes through this script or its logs). ca-root-key must have one before step 10.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 6; fi

step 6 "Secret Manager secrets ${SECRETS[*]} (names only)"
for secret in "${SECRETS[@]}"; do
  exists gcloud secrets describe "$secret" --project="$PROJECT" \
    || run gcloud secrets create "$secret" --replication-policy=automatic --project="$PROJECT"
done
note "operator: add each value once (printf, not echo: no trailing newline), e.g. a new root key:"
note "printf '%s' \"\$(openssl rand -base64 48)\" | gcloud secrets versions add ca-root-key --data-file=- --project=$PROJECT"
note "printf '%s' \"\$SMTP_PASSWORD\" | gcloud secrets versions add smtp-password --data-file=- --project=$PROJECT"
note "printf '%s' \"\$SLACK_WEBHOOK_URL\" | gcloud secrets versions add slack-webhook --data-file=- --project=$PROJECT"
