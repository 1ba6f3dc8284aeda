#!/usr/bin/env bash
# 02: the three service accounts and their project-level roles (resource-level ones: step 08).
#   convergence-launcher   the Cloud Run service: launches Flex Templates, runs BigQuery jobs
#   convergence-worker     the Flex Template launcher VM and the Dataflow workers
#   convergence-scheduler  Cloud Scheduler's OIDC identity (no project role; run.invoker in step 10)
# --condition=None: without it, a project policy holding any conditional binding makes a
# non-interactive add-iam-policy-binding fail. Bindings run one at a time (the policy has an etag)
# and are retried: a new service account takes a few seconds to become bindable.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 2; fi

step 2 "service accounts and project roles"
for sa in convergence-launcher convergence-worker convergence-scheduler; do
  exists gcloud iam service-accounts describe "$sa@$PROJECT.iam.gserviceaccount.com" --project="$PROJECT" \
    || run gcloud iam service-accounts create "$sa" --display-name="$sa" --project="$PROJECT"
done

for binding in \
  "$WORKER_SA roles/dataflow.worker" \
  "$WORKER_SA roles/bigquery.jobUser" \
  "$LAUNCHER_SA roles/dataflow.developer" \
  "$LAUNCHER_SA roles/bigquery.jobUser" \
  "$LAUNCHER_SA roles/cloudscheduler.viewer"; do  # read-only: `convergence doctor` checks the jobs as the service
  read -r member role <<<"$binding"
  run_retry gcloud projects add-iam-policy-binding "$PROJECT" \
    --member="serviceAccount:$member" --role="$role" --condition=None
done
