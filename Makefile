# `make demo` trains on the built-in synthetic dataset, `make test` lints and
# runs the whole test suite, `make test-fast` leaves out the slow end-to-end
# tests while developing. All create the virtual environment in .venv first
# if needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements
DEMO_ROOT ?= experiments/demo

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED = 1

.PHONY: demo test test-fast lint venv browser clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

data/demo/demo_train.csv: data/make_demo.py | $(STAMP)
	$(BIN)/python data/make_demo.py --output data/demo --force

EMBED = $(BIN)/python embed.py --experiment_root $(DEMO_ROOT) --quiet
EVAL = $(BIN)/python evaluate.py --excluder market1501 --metric euclidean \
	--query_dataset data/demo/demo_query.csv --gallery_dataset data/demo/demo_test.csv

# Generates the demo set, trains with recipes/demo.args (validating on
# held-out identities every 100 iterations), then embeds and evaluates the untrained (step 0) and the
# trained network, plain and re-ranked, and draws the pictures.
demo: data/demo/demo_train.csv recipes/demo.args | $(STAMP)
	$(BIN)/python train.py @recipes/demo.args --experiment_root $(DEMO_ROOT) \
	    --train_set data/demo/demo_train.csv --image_root data/demo \
	    --val_query data/demo/demo_val_query.csv --val_gallery data/demo/demo_val_test.csv
	$(EMBED) --dataset data/demo/demo_query.csv --checkpoint checkpoint-0 --filename untrained_query.h5 \
	    --crop_augment center
	$(EMBED) --dataset data/demo/demo_test.csv --checkpoint checkpoint-0 --filename untrained_test.h5 \
	    --crop_augment center
	$(EMBED) --dataset data/demo/demo_query.csv --flip_augment --crop_augment five --aggregator mean
	$(EMBED) --dataset data/demo/demo_test.csv --flip_augment --crop_augment five --aggregator mean
	@echo "Untrained network (step 0):"
	@$(EVAL) --query_embeddings $(DEMO_ROOT)/untrained_query.h5 \
	    --gallery_embeddings $(DEMO_ROOT)/untrained_test.h5 --filename $(DEMO_ROOT)/untrained_eval.json
	@echo "Trained network, flip- and five-crop-augmented embeddings (pictures in $(DEMO_ROOT)/plots):"
	@$(EVAL) --query_embeddings $(DEMO_ROOT)/demo_query_embeddings.h5 \
	    --gallery_embeddings $(DEMO_ROOT)/demo_test_embeddings.h5 --filename $(DEMO_ROOT)/eval.json \
	    --plot $(DEMO_ROOT)/plots --image_root data/demo --plot_queries 6
	@echo "Trained network, re-ranked:"
	@$(EVAL) --query_embeddings $(DEMO_ROOT)/demo_query_embeddings.h5 \
	    --gallery_embeddings $(DEMO_ROOT)/demo_test_embeddings.h5 \
	    --filename $(DEMO_ROOT)/eval_rerank.json --rerank
	@echo "Best validation checkpoint: $$(cat $(DEMO_ROOT)/best.json | tr -d '\n ')"

lint: $(STAMP)
	$(BIN)/ruff check .

# The browser tests of the HTML reports need a Chromium. As root on Debian (CI
# machines) it is installed from Debian's packages; elsewhere, without one,
# those tests are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	echo 'No Chromium: the browser tests of the HTML reports will be skipped (Debian: apt install chromium).'

# -n: the tests run in parallel processes (pytest-xdist), one per core and
# four at most, as each holds a TensorFlow; --durations: what the suite costs,
# its slowest tests first, in every run.
PYTEST = $(BIN)/python -m pytest -q -n auto --maxprocesses 4
test: lint browser
	$(PYTEST) --durations=15 tests

test-fast: lint
	$(PYTEST) -m 'not slow' tests

clean:
	rm -rf $(VENV) data/demo data/demo.partial experiments
