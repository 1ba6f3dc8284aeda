#!/usr/bin/env bash
# 11: Cloud Scheduler jobs, created or updated in place: one per scheduled pipeline, as
# `convergence schedules render` derives them from the configs, and the reconcile job every 10
# minutes. Every job sends Scheduler's OIDC token with ONE audience, the service URL, which the
# service checks as SCHEDULER_AUDIENCE on both routes. `update http` has no --headers flag
# (--update-headers instead). Jobs of pipelines no longer scheduled are not deleted.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 11; fi

step 11 "Cloud Scheduler jobs"
need_convergence
if [[ -z "${SERVICE_URL:-}" ]]; then
  SERVICE_URL="$(read_value https://SERVICE-URL gcloud run services describe "$SERVICE" --region="$REGION" \
    --project="$PROJECT" --format='value(status.url)')"
fi

scheduler_job() {  # scheduler_job NAME FLAGS...: update it if it exists, else create it
  local name="$1"; shift
  if exists gcloud scheduler jobs describe "$name" --location="$REGION" --project="$PROJECT"; then
    run gcloud scheduler jobs update http "$name" "$@" --update-headers=Content-Type=application/json
  else
    run gcloud scheduler jobs create http "$name" "$@" --headers=Content-Type=application/json
  fi
}

# The rendered jobs (a local read of configs/; the reconcile job included), one line each: the job
# name, then its flags, tab-separated.
jobs="$("$CONVERGENCE" schedules render --format flags --launcher-url "$SERVICE_URL" \
  --service-account "$SCHEDULER_SA" --project "$PROJECT" --region "$REGION")"
while IFS=$'\t' read -r -a job; do
  scheduler_job "${job[0]}" --project="$PROJECT" "${job[@]:1}"
done <<<"$jobs"
