#!/usr/bin/env bash
# Deploy convergence from an empty Google Cloud project to a working service, idempotently:
# every step converges (describe || create, bindings that are no-ops when present), so re-running
# after a failure or for a new image is safe.
#
#   PROJECT=my-proj REGION=europe-west1 BUCKET=my-proj-convergence \
#   CORS_ORIGINS=https://app.example.com bash deploy/deploy.sh
#
# DRY_RUN=1 prints every command in order instead of running it (see deploy/lib.sh);
# deploy/env.example lists the variables. Each step can also run alone:
#   bash deploy/steps/03-bucket.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
deploy_settings 1

for step_file in \
  01-services 02-service-accounts 03-bucket 04-image 05-kms 06-secrets \
  07-bigquery 08-iam 09-templates 10-cloud-run 11-scheduler; do
  source "$DEPLOY_DIR/steps/$step_file.sh"
done

if dry; then
  say "==> dry run: nothing was changed"
else
  say "==> done: $SERVICE_URL"
fi
