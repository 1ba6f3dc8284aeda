#!/usr/bin/env bash
# 03: the bucket for template specs (templates/), job temp files (tmp/) and staged billing parts
# (staging/), in REGION beside the jobs. Uniform access and public access prevention are boolean
# flags (no =value); deploy/lifecycle.json deletes tmp/ and staging/ objects after 7 days.
# Created once, then converged on every run (update replaces the whole lifecycle configuration).
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 3; fi

step 3 "bucket gs://$BUCKET"
exists gcloud storage buckets describe "gs://$BUCKET" --project="$PROJECT" \
  || run gcloud storage buckets create "gs://$BUCKET" --project="$PROJECT" --location="$REGION" \
       --uniform-bucket-level-access --public-access-prevention --lifecycle-file=deploy/lifecycle.json
runq gcloud storage buckets update "gs://$BUCKET" --project="$PROJECT" \
  --uniform-bucket-level-access --public-access-prevention --lifecycle-file=deploy/lifecycle.json
