#!/usr/bin/env bash
# 01: enable the APIs. Enabling an enabled service does nothing, so this is idempotent.
# compute: the Flex Template launcher VM and the workers are Compute Engine VMs; iam and
# cloudresourcemanager: service accounts and bindings; logging: job and service logs.
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 1; fi

step 1 "enable services"
run gcloud services enable \
  dataflow.googleapis.com compute.googleapis.com logging.googleapis.com \
  storage.googleapis.com storage-api.googleapis.com storage-component.googleapis.com \
  bigquery.googleapis.com cloudresourcemanager.googleapis.com iam.googleapis.com \
  artifactregistry.googleapis.com cloudbuild.googleapis.com \
  run.googleapis.com cloudscheduler.googleapis.com secretmanager.googleapis.com cloudkms.googleapis.com \
  --project="$PROJECT"
