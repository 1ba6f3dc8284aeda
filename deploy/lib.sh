# shellcheck shell=bash
# Shared by deploy/deploy.sh and every deploy/steps/NN-*.sh: settings, checks and the `run` helper.
#
# Each command that changes something is printed, shell-quoted, one per line, prefixed "+ ", then
# run. DRY_RUN=1: nothing touches Google Cloud, the commands are only printed; the probes
# (describe ...) are printed too and answer "missing", so the dry run shows what an empty project
# gets. Reads whose result later commands need print a placeholder instead:
# https://SERVICE-URL for the Cloud Run URL, REGISTRY-URI for the Artifact Registry repository.

[[ -n "${DEPLOY_LIB_LOADED:-}" ]] && return 0
DEPLOY_LIB_LOADED=1

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
cd "$REPO_ROOT"  # gcloud builds submit uploads "."; deploy/lifecycle.json is read relative to it
STEPS_TOTAL=11
exec 3>&1        # dry-run lines and headers go to fd 3, so $(read_value ...) captures only values

dry() { [[ "${DRY_RUN:-}" == 1 ]]; }

say() { printf '%s\n' "$*" >&3; }
note() { say "# $*"; }
warn() { printf 'deploy: warning: %s\n' "$*" >&2; }
die() { printf 'deploy: error: %s\n' "$*" >&2; exit "${2:-1}"; }

step() {  # step N "what": the one-line header of a step
  say "==> [$1/$STEPS_TOTAL] $2"
}

quote() {  # one word, quoted the way Python's shlex.quote does (so shlex.split reads it back)
  if [[ -n "$1" && "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\"\'\"\'}"
  fi
}

show() {  # show CMD...: print "+ CMD" on one line
  local line="+" word
  for word in "$@"; do line+=" $(quote "$word")"; done
  say "$line"
}

run() {  # run CMD...: print it; unless DRY_RUN=1, execute it
  show "$@"
  dry || "$@"
}

runq() {  # like run, without the command's stdout (IAM commands print the whole policy)
  show "$@"
  dry || "$@" >/dev/null
}

run_retry() {  # like runq, retried with backoff: a service account is bindable a little after creation
  show "$@"
  dry && return 0
  local delay
  for delay in 5 10 20 40; do
    "$@" >/dev/null && return 0
    warn "failed; retrying in ${delay}s: $*"
    sleep "$delay"
  done
  "$@" >/dev/null
}

# How gcloud says "no such resource" (NOT_FOUND, "not found: 404", "Cannot find service [...]").
MISSING_RE='not[_ ]found|404|does not exist|cannot find'

exists() {  # exists CMD...: 0 if the describe command finds the resource, 1 if it is missing
  if dry; then show "$@"; return 1; fi
  local err
  if err="$("$@" 2>&1 >/dev/null)"; then return 0; fi
  if grep -qiE "$MISSING_RE" <<<"$err"; then return 1; fi
  die "cannot tell whether it exists (permission denied, or the name belongs to someone else?): $* -> $(head -n 1 <<<"$err")"
}

read_value() {  # read_value PLACEHOLDER CMD...: the command's output; in DRY_RUN the placeholder
  local placeholder="$1"; shift
  if dry; then show "$@"; printf '%s' "$placeholder"; return 0; fi
  "$@"
}

read_if_exists() {  # like read_value, but an empty answer when the resource does not exist
  local placeholder="$1" out err rc=0; shift
  if dry; then show "$@"; printf '%s' "$placeholder"; return 0; fi
  err="$(mktemp)"
  out="$("$@" 2>"$err")" || rc=$?
  if ((rc)); then
    if grep -qiE "$MISSING_RE" "$err"; then rm -f "$err"; return 0; fi
    cat "$err" >&2; rm -f "$err"; return "$rc"
  fi
  rm -f "$err"
  printf '%s' "$out"
}

# --- settings -----------------------------------------------------------------------------------

deploy_settings() {  # validate the environment (one error line each, exit 2) and derive every name
  local need_cors="${1:-1}" errors=() v
  PROJECT="${PROJECT:-}" REGION="${REGION:-}" BUCKET="${BUCKET:-}"
  LOCATION="${LOCATION:-US}" REPO="${REPO:-convergence}" SERVICE="${SERVICE:-convergence-launcher}"
  IMAGE="${IMAGE:-}" CORS_ORIGINS="${CORS_ORIGINS:-}"

  if [[ -z "$PROJECT" ]]; then errors+=("PROJECT: required (the Google Cloud project id, e.g. my-proj)")
  elif ! [[ "$PROJECT" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]]; then errors+=("PROJECT: '$PROJECT' is not a project id (6-30 lowercase letters, digits, hyphens)"); fi
  if [[ -z "$REGION" ]]; then errors+=("REGION: required (Dataflow, Cloud Run, Artifact Registry, KMS and Scheduler region, e.g. europe-west1)")
  elif ! [[ "$REGION" =~ ^[a-z]+-[a-z]+[0-9]+$ ]]; then errors+=("REGION: '$REGION' is not a region name like europe-west1"); fi
  if [[ -z "$BUCKET" ]]; then errors+=("BUCKET: required (a new, globally unique bucket name, e.g. my-proj-convergence)")
  elif ! [[ "$BUCKET" =~ ^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$ ]]; then errors+=("BUCKET: '$BUCKET' is not a bucket name (3-63 lowercase letters, digits, - and _; no gs://)"); fi
  [[ "$LOCATION" =~ ^[A-Za-z0-9-]+$ ]] || errors+=("LOCATION: '$LOCATION' is not a BigQuery location like US, EU or europe-west1")
  [[ "$REPO" =~ ^[a-z]([a-z0-9-]*[a-z0-9])?$ ]] || errors+=("REPO: '$REPO' is not an Artifact Registry repository name")
  [[ "$SERVICE" =~ ^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$ ]] || errors+=("SERVICE: '$SERVICE' is not a Cloud Run service name")
  if [[ "$need_cors" == 1 ]]; then
    if [[ -z "$CORS_ORIGINS" ]]; then errors+=("CORS_ORIGINS: required (the launcher refuses to start in production without it), e.g. https://app.example.com,https://admin.example.com")
    else
      IFS=, read -ra origins <<<"$CORS_ORIGINS"
      for v in "${origins[@]}"; do
        [[ "$v" =~ ^https?://[^/\;\ ]+$ ]] || errors+=("CORS_ORIGINS: '$v' is not an origin like https://app.example.com (scheme and host, no path)")
      done
    fi
  fi
  if [[ -n "${FORWARDED_ALLOW_IPS:-}" ]]; then
    errors+=("FORWARDED_ALLOW_IPS: not used on Cloud Run (the service sets FORWARDED_TRUSTED_HOPS=1: the X-Forwarded-For entry Google appended is the client); unset it")
  fi
  for v in $OPTIONAL_SERVICE_SETTINGS; do
    [[ "${!v:-}" != *";"* ]] || errors+=("$v: must not contain ';' (the --set-env-vars delimiter)")
  done
  if ((${#errors[@]})); then
    printf 'deploy: error: %s\n' "${errors[@]}" >&2
    exit 2
  fi

  KEYRING=convergence KEY=credentials
  LAUNCHER_SA="convergence-launcher@$PROJECT.iam.gserviceaccount.com"
  WORKER_SA="convergence-worker@$PROJECT.iam.gserviceaccount.com"
  SCHEDULER_SA="convergence-scheduler@$PROJECT.iam.gserviceaccount.com"
  KMS_KEY_NAME="projects/$PROJECT/locations/$REGION/keyRings/$KEYRING/cryptoKeys/$KEY"
  SECRETS=(ca-root-key smtp-password slack-webhook)
  TEMPLATES_PATH="gs://$BUCKET/templates"
  # The launcher, and `convergence provision` / `templates publish` from this machine: the CLI of
  # this checkout's virtualenv unless CONVERGENCE names another.
  if [[ -z "${CONVERGENCE:-}" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/convergence" ]]; then CONVERGENCE="$REPO_ROOT/.venv/bin/convergence"
    else CONVERGENCE=convergence; fi
  fi
  PYTHON="${PYTHON:-}"
  if [[ -z "$PYTHON" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
  fi
  if ! dry; then
    command -v gcloud >/dev/null || die "gcloud: not found (install the Google Cloud CLI)" 2
    command -v bq >/dev/null || die "bq: not found (it comes with the Google Cloud CLI)" 2
  fi
}

# Service settings passed through to Cloud Run when set (notification targets, limits, proxies).
OPTIONAL_SERVICE_SETTINGS="SMTP_HOST SMTP_PORT SMTP_USERNAME NOTIFY_EMAIL_FROM NOTIFY_EMAIL_TO SMTP_CA_FILE
DATAFLOW_MAX_WORKERS DATAFLOW_LEASE_HOURS KMS_CREDENTIAL_AAD RATE_LIMIT_PER_KEY
RATE_LIMIT_PER_IP AUTH_FAILURES_PER_IP DEFAULT_DAILY_QUOTA MAX_REQUEST_BODY_BYTES"

resolve_image() {  # IMAGE, unless given: <repository's registry URI>/convergence:<git short SHA>
  [[ -n "${IMAGE:-}" ]] && return 0
  local sha registry
  sha="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null)" \
    || die "IMAGE: not set, and no git commit to tag the image with; set IMAGE" 2
  if [[ -n "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null)" ]]; then
    sha+="-dirty"
    warn "uncommitted changes: the image is tagged $sha and rebuilt on every run; commit for a reproducible image"
  fi
  registry="$(read_value REGISTRY-URI gcloud artifacts repositories describe "$REPO" --location="$REGION" \
    --project="$PROJECT" --format='value(registryUri)')"
  IMAGE="$registry/convergence:$sha"
}

need_convergence() {  # the convergence CLI runs on this machine (provision, templates, schedules)
  command -v "$CONVERGENCE" >/dev/null \
    || die "convergence CLI not found ($CONVERGENCE): run make install, or set CONVERGENCE to its path" 2
}

step_init() {  # the guard of a step file run on its own: settings for that step only
  set -euo pipefail
  deploy_settings "$([[ "$1" == 10 ]] && echo 1 || echo 0)"
}
