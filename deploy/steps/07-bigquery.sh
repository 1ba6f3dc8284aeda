#!/usr/bin/env bash
# 07: the central `organizations` dataset in LOCATION (BigQuery's, default US: not the Dataflow
# region) and its metadata tables. -f makes `bq mk` a no-op when the dataset exists. The tables
# come from `convergence provision`, which creates the missing ones from configs/system with their
# partitioning and clustering (it alters nothing that exists). It runs on this machine with the
# production settings and Application Default Credentials (gcloud auth application-default login).
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 7; fi

step 7 "BigQuery dataset $PROJECT:organizations in $LOCATION and its tables"
need_convergence
run bq --project_id="$PROJECT" --location="$LOCATION" mk -f --dataset \
  --description="convergence metadata (orgs, keys, subscriptions, credentials, run records)" \
  "$PROJECT:organizations"
run env -u BIGQUERY_EMULATOR_HOST GCP_PROJECT_ID="$PROJECT" BIGQUERY_LOCATION="$LOCATION" \
  CONVERGENCE_METASTORE=bigquery ENVIRONMENT=production "$CONVERGENCE" provision
