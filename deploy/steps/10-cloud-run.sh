#!/usr/bin/env bash
# 10: the launcher on Cloud Run, then its URL as the one Scheduler audience.
#
# --no-invoker-iam-check: Google's front end lets every request through and the app authenticates
# each call itself (X-API-Key for customers, the root key or Cloud Scheduler's OIDC token on the
# scheduler and reconcile routes; only /health is open). With the IAM check on, the front end
# would reject customers' X-API-Key calls and browsers' CORS preflights before the app sees them.
# --command/--args: the image's entrypoint is the Beam worker boot, not the server.
# --cpu-throttling: CPU only while serving (nothing runs in the background; reconcile is a call).
# --set-env-vars replaces every variable, with ';' as the delimiter (CORS_ORIGINS has commas).
# Secrets travel as Secret Manager names; the service reads the root key itself at start, so the
# secret needs a version before the first deploy, or the revision cannot start.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 10; fi

step 10 "Cloud Run service $SERVICE"
resolve_image
root_key_version="$(read_value 1 gcloud secrets versions list ca-root-key --filter=state=enabled --limit=1 \
  --format='value(name)' --project="$PROJECT")"
if [[ -z "$root_key_version" ]]; then
  die "secret ca-root-key has no enabled version, so the service cannot start. Add one, then re-run:
  printf '%s' \"\$(openssl rand -base64 48)\" | gcloud secrets versions add ca-root-key --data-file=- --project=$PROJECT"
fi

# SCHEDULER_AUDIENCE is the service URL, known once the service exists: a first deploy starts with
# a placeholder (the check only needs a value; no Scheduler job exists yet) and is updated below.
url_before="$(read_if_exists "" gcloud run services describe "$SERVICE" --region="$REGION" \
  --project="$PROJECT" --format='value(status.url)')"

env_vars="^;^ENVIRONMENT=production;LAUNCHER_BACKEND=dataflow"
env_vars+=";CONVERGENCE_METASTORE=bigquery;CONVERGENCE_SINK=bigquery;CONVERGENCE_CIPHER=kms"
env_vars+=";GCP_PROJECT_ID=$PROJECT;GCP_REGION=$REGION;BIGQUERY_LOCATION=$LOCATION;KMS_KEY_NAME=$KMS_KEY_NAME"
env_vars+=";CA_ROOT_API_KEY_SECRET=projects/$PROJECT/secrets/ca-root-key"
env_vars+=";SMTP_PASSWORD_SECRET=projects/$PROJECT/secrets/smtp-password"
env_vars+=";SLACK_WEBHOOK_URL_SECRET=projects/$PROJECT/secrets/slack-webhook"
env_vars+=";DATAFLOW_TEMPLATES_PATH=$TEMPLATES_PATH;DATAFLOW_TEMP_LOCATION=gs://$BUCKET/tmp"
env_vars+=";CONVERGENCE_STAGING_LOCATION=gs://$BUCKET/staging"
env_vars+=";DATAFLOW_SERVICE_ACCOUNT=$WORKER_SA;DATAFLOW_SDK_CONTAINER_IMAGE=$IMAGE"
env_vars+=";SCHEDULER_SERVICE_ACCOUNT=$SCHEDULER_SA;SCHEDULER_AUDIENCE=${url_before:-pending-first-deploy}"
env_vars+=";CORS_ORIGINS=$CORS_ORIGINS"
env_vars+=";FORWARDED_TRUSTED_HOPS=1"  # the client is the X-Forwarded-For entry Google's front end appended
for name in $OPTIONAL_SERVICE_SETTINGS; do
  [[ -n "${!name:-}" ]] && env_vars+=";$name=${!name}"
done

run gcloud run deploy "$SERVICE" --image="$IMAGE" --region="$REGION" --project="$PROJECT" \
  --service-account="$LAUNCHER_SA" --no-invoker-iam-check \
  --command=convergence --args=serve,--host,0.0.0.0,--port,8080 --port=8080 \
  --cpu-throttling --set-env-vars="$env_vars" --quiet

SERVICE_URL="$(read_value https://SERVICE-URL gcloud run services describe "$SERVICE" --region="$REGION" \
  --project="$PROJECT" --format='value(status.url)')"
[[ "$SERVICE_URL" == https://* ]] || die "no URL for Cloud Run service $SERVICE (got '$SERVICE_URL')"
if [[ "$SERVICE_URL" != "$url_before" ]]; then
  run gcloud run services update "$SERVICE" --region="$REGION" --project="$PROJECT" \
    --update-env-vars="SCHEDULER_AUDIENCE=$SERVICE_URL" --quiet
fi
# Kept although the IAM check is off: it is what Scheduler's identity would need if it is turned on.
runq gcloud run services add-iam-policy-binding "$SERVICE" --region="$REGION" --project="$PROJECT" \
  --member="serviceAccount:$SCHEDULER_SA" --role=roles/run.invoker
