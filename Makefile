# Two commands for a fresh machine: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `accelerate launch` runs a CPU process with 1 thread unless told otherwise
CPU_THREADS ?= $(shell nproc 2>/dev/null || echo 1)
# optimizer steps of `make fashion-mnist-model`
FASHION_STEPS ?= 6000

.PHONY: setup demo test test-fast test-wheel fashion-mnist benchmarks time-to-quality-fashion-mnist recipe-ablations-fashion-mnist fashion-mnist-model clean

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
		--num_cpu_threads_per_process $(CPU_THREADS) \
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

# Fashion-MNIST (60,000 + 10,000 28x28 grayscale images, MIT licence) from Debian's dataset-fashion-mnist package:
# the installed files if present, else `apt-get download` + `dpkg-deb -x` (no root needed), converted into the local
# dataset data/fashion-mnist (train/test splits, image + label) that `--dataset_name data/fashion-mnist` trains on.
FASHION_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist: data/fashion-mnist/dataset_dict.json
data/fashion-mnist/dataset_dict.json: | $(STAMP)
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then src=$(FASHION_DIR); else \
		mkdir -p data/deb && cd data/deb && apt-get download dataset-fashion-mnist && \
		dpkg-deb -x dataset-fashion-mnist_*.deb root && cd ../.. && src=data/deb/root$(FASHION_DIR); fi; \
	$(PY) -m diffusers_simple_training.fashion_mnist --source_dir $$src --output_dir data/fashion-mnist

benchmarks: $(STAMP)
	$(PY) benchmarks/run_all.py

# Fashion-MNIST time to quality, this project's recipe vs the official one: about 2x the largest budget (40 min) on 2 cores
time-to-quality-fashion-mnist: fashion-mnist
	$(PY) benchmarks/time_to_quality_fashion_mnist.py

# Fashion-MNIST recipe ablations: fashion_mnist.yaml and one change of it at a time, 10 idle CPU minutes each (~2 h)
recipe-ablations-fashion-mnist: fashion-mnist
	$(PY) benchmarks/recipe_ablations_fashion_mnist.py

# The Fashion-MNIST model of the README (class-conditional, 6000 steps, about 2 h on 2 CPU cores, then about 10 min of grid calibration), then its metrics
# in its card. Killed, it resumes from its last checkpoint when run again.
fashion-mnist-model: fashion-mnist
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(CPU_THREADS) training/train.py --config training/configs/fashion_mnist.yaml \
		--label_column label --class_dropout_prob 0.1 --max_train_steps $(FASHION_STEPS) --checkpointing_steps 500 \
		--checkpoints_total_limit 2 --output_dir outputs/fashion_mnist_model --resume_from_checkpoint latest
	$(PY) -m diffusers_simple_training.evaluate --pretrained_model_name_or_path outputs/fashion_mnist_model \
		--metrics classifier --reference data/fashion-mnist --reference_split test --pad_to_resolution \
		--num_samples 500 --batch_size 250

clean:
	rm -rf $(VENV) outputs data .pytest_cache
