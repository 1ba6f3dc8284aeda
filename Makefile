# Every developer command. The first target that needs the virtualenv creates it and installs the
# package (editable) with its pinned dependencies; later runs reuse .venv until setup.py changes.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install emulator-install demo demo-bigquery emulator test bench lint validate simulate serve templates template-image template-build template-run deploy clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (first run takes a few minutes)..."
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --progress-bar on -e '.[test]'
	@touch $(STAMP)

# The BigQuery emulator (PyPI bqemulator) lives in its own virtualenv: its DuckDB pin conflicts with ours.
EMU_VENV  := .venv-bqemulator
EMU_STAMP := $(EMU_VENV)/.installed
EMU_REQS  := beam_pipelines/testing/emulators/bqemulator-requirements.txt

$(EMU_STAMP): $(EMU_REQS)
	@test -x $(EMU_VENV)/bin/python || $(PYTHON) -m venv $(EMU_VENV)
	@echo "Installing the BigQuery emulator into $(EMU_VENV)..."
	$(EMU_VENV)/bin/pip install --quiet --upgrade pip
	$(EMU_VENV)/bin/pip install --quiet -r $(EMU_REQS)
	@touch $(EMU_STAMP)

emulator-install: $(EMU_STAMP)

demo: install
	$(BIN)/convergence demo

demo-bigquery: install $(EMU_STAMP)
	$(BIN)/convergence demo --bigquery

emulator: install $(EMU_STAMP)
	$(BIN)/convergence emulator bigquery --port 9050

test: install $(EMU_STAMP)
	$(BIN)/python -m pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

serve: install
	$(BIN)/convergence serve

lint: install
	$(BIN)/ruff check .

validate: install
	$(BIN)/convergence validate

simulate: install
	$(BIN)/convergence simulate

# --- Dataflow Flex Templates (DRY_RUN=1 prints the commands instead of running them) ---------------
PROJECT    ?= $(GCP_PROJECT_ID)
REGION     ?= $(GCP_REGION)
BUCKET     ?= $(PROJECT)-convergence
REPOSITORY ?= convergence
IMAGE      ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/convergence:$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
PIPELINE   ?= openai/cost/usage_cost
RUN        := $(if $(DRY_RUN),@echo,)
METADATA   := $(wildcard templates/metadata/*.json)

templates: install
	$(BIN)/convergence templates generate

template-image:
	$(RUN) gcloud builds submit --project=$(PROJECT) --region=$(REGION) --config=templates/cloudbuild.yaml \
	  --substitutions=_IMAGE=$(IMAGE) .

# Writes each Flex Template spec (Dataflow's ContainerSpec: image, metadata, default worker
# environment) to gs://$(BUCKET)/templates. The documented alternative is, per metadata file:
#   gcloud dataflow flex-template build gs://BUCKET/templates/NAME.json --image=IMAGE --sdk-language=PYTHON
#     --metadata-file=templates/metadata/NAME.json      (--image only: never with --env)
template-build: templates
	$(RUN) $(BIN)/convergence templates publish --path=gs://$(BUCKET)/templates --image=$(IMAGE) \
	  --service-account=convergence-worker@$(PROJECT).iam.gserviceaccount.com --temp-location=gs://$(BUCKET)/tmp

template-run:
	$(RUN) gcloud dataflow flex-template run "$$(echo $(PIPELINE) | tr '/_' '--')-manual-$$(date -u +%Y%m%d-%H%M%S)" \
	  --template-file-gcs-location=gs://$(BUCKET)/templates/$(subst /,_,$(PIPELINE)).json \
	  --region=$(REGION) --project=$(PROJECT) \
	  '--parameters=^;^pipeline=$(PIPELINE);org_slugs=$(ORGS);run_ids=$(RUN_IDS);start_date=$(START_DATE);end_date=$(END_DATE);environment=production'

# From an empty project to a working service (deploy/deploy.sh; DRY_RUN=1 prints every command in order).
deploy: install
	DRY_RUN=$(DRY_RUN) PROJECT=$(PROJECT) REGION=$(REGION) BUCKET=$(BUCKET) bash deploy/deploy.sh

clean:
	rm -rf .convergence bench-results.json .pytest_cache
