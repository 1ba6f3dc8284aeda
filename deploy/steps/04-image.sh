#!/usr/bin/env bash
# 04: the Artifact Registry repository and the one image (Flex Template launcher, Dataflow worker
# SDK container and Cloud Run service), built by Cloud Build from this checkout. The tag is the
# git commit, so an image that exists is not rebuilt (a "-dirty" tag always is).
if [[ -z "${DEPLOY_LIB_LOADED:-}" ]]; then source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"; step_init 4; fi

step 4 "Artifact Registry repository $REPO and the image"
exists gcloud artifacts repositories describe "$REPO" --location="$REGION" --project="$PROJECT" \
  || run gcloud artifacts repositories create "$REPO" --repository-format=docker --location="$REGION" \
       --description="convergence images" --project="$PROJECT"
resolve_image
if [[ "$IMAGE" != *-dirty ]] && exists gcloud artifacts docker images describe "$IMAGE" --project="$PROJECT"; then
  say "    image $IMAGE exists; not rebuilt"
else
  # Cloud Build runs as the project's default build account: in newer projects the Compute Engine
  # default account, which may hold no role (see gcloud builds get-default-service-account). If the
  # build is refused, grant that account roles/cloudbuild.builds.builder (with --condition=None).
  run gcloud builds submit . --config=templates/cloudbuild.yaml --substitutions="_IMAGE=$IMAGE" \
    --region="$REGION" --project="$PROJECT"
fi
