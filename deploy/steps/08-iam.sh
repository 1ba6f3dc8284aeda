#!/usr/bin/env bash
# 08: resource-level bindings, now that the resources exist (run.invoker on the service: step 10).
# All idempotent: adding a member that already holds the role changes nothing.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 8; fi

step 8 "resource-level IAM"
# The launcher launches jobs that run as the worker account.
run_retry gcloud iam service-accounts add-iam-policy-binding "$WORKER_SA" \
  --member="serviceAccount:$LAUNCHER_SA" --role=roles/iam.serviceAccountUser --project="$PROJECT"
# Only the workers decrypt credentials, with this one key.
runq gcloud kms keys add-iam-policy-binding "$KEY" --keyring="$KEYRING" --location="$REGION" \
  --member="serviceAccount:$WORKER_SA" --role=roles/cloudkms.cryptoKeyDecrypter --project="$PROJECT"
# The workers read the notification secrets; the launcher reads the root key.
for binding in "smtp-password $WORKER_SA" "slack-webhook $WORKER_SA" "ca-root-key $LAUNCHER_SA"; do
  read -r secret member <<<"$binding"
  runq gcloud secrets add-iam-policy-binding "$secret" --member="serviceAccount:$member" \
    --role=roles/secretmanager.secretAccessor --project="$PROJECT"
done
# The workers stage and write temp files; the launcher reads template specs (step 09 writes them
# with the operator's credentials, so read access is enough).
runq gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$WORKER_SA" \
  --role=roles/storage.objectAdmin --project="$PROJECT"
runq gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$LAUNCHER_SA" \
  --role=roles/storage.objectViewer --project="$PROJECT"
# The worker account pulls the image (it runs the Flex Template launcher VM and the workers).
runq gcloud artifacts repositories add-iam-policy-binding "$REPO" --location="$REGION" \
  --member="serviceAccount:$WORKER_SA" --role=roles/artifactregistry.reader --project="$PROJECT"
# Both read and write the metadata tables. GRANT is idempotent and runs in the dataset's location.
# Each org dataset {org}_prod needs the same GRANT for the worker when it is created.
run bq --project_id="$PROJECT" --location="$LOCATION" query --nouse_legacy_sql \
  "GRANT \`roles/bigquery.dataEditor\` ON SCHEMA \`$PROJECT.organizations\` TO \"serviceAccount:$LAUNCHER_SA\", \"serviceAccount:$WORKER_SA\""
