#!/usr/bin/env bash
# 09: one Flex Template spec per pipeline, written to gs://BUCKET/templates/<template>.json: the
# image, and as default environment the worker image, worker account and temp location.
# `convergence templates publish` writes them itself (google-cloud-storage, with this machine's
# Application Default Credentials); it overwrites, so it is idempotent.
#
# The documented alternative, per metadata file (--image only: --env belongs to the build-from-
# source form, and gcloud rejects it next to --image):
#   for meta in templates/metadata/*.json; do
#     gcloud dataflow flex-template build "gs://$BUCKET/templates/$(basename "$meta")" \
#       --image="$IMAGE" --sdk-language=PYTHON --metadata-file="$meta" --project="$PROJECT"
#   done
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 9; fi

step 9 "Flex Template specs in $TEMPLATES_PATH"
need_convergence
resolve_image
if ! dry && ! "$CONVERGENCE" templates publish --help >/dev/null 2>&1; then
  die "'$CONVERGENCE templates publish' is not available; update the checkout, or write the specs with the gcloud dataflow flex-template build loop in deploy/steps/09-templates.sh, then re-run"
fi
run env -u STORAGE_EMULATOR_HOST "$CONVERGENCE" templates publish --path="$TEMPLATES_PATH" \
  --image="$IMAGE" --service-account="$WORKER_SA" --temp-location="gs://$BUCKET/tmp"
