# Two commands for a fresh machine: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast test-wheel benchmarks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Trains briefly on CPU on the embedded digits dataset; writes a pipeline folder, sample grid and model card.
demo: $(STAMP)
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		training/train.py --config training/configs/demo.yaml --output_dir outputs/demo --overwrite_output_dir
	@echo "Samples: outputs/demo/samples.png. Load the pipeline with" \
		"DiffusionPipeline.from_pretrained('outputs/demo', trust_remote_code=True)."

test: $(STAMP)
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow"

# The wheel as a user installs it: built from the checkout, installed (torch CPU wheel first) into a fresh venv in a
# temporary folder, then from outside the checkout a 3-step `diffusers-simple-train` on the embedded digits, and the
# result loaded with `DiffusionPipeline.from_pretrained(out, trust_remote_code=True)` and sampled. Needs no .venv.
test-wheel:
	PYTHON=$(PYTHON) bash .ci/wheel_smoke.sh

benchmarks: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
