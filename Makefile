# Two entry points for a user: `make demo` (the main job on the built-in real data kit) and `make test`.
# Both create .venv on first use, install torch first (the CPU build unless a GPU is present: a bare
# `torch` requirement can pull a multi-GB CUDA build), then this package.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
DEMO_OUT ?= outputs/demo
# DeepSpeed's C++ ops (CPU all-reduce) compile on first use, keyed by this venv's paths: a build dir of
# the venv's own, so checkouts sharing ~/.cache do not rebuild over each other (or wait forever on the
# lock of a build that was killed).
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: venv demo test kit bench bench-peer study clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[kit,test,study]'
	touch $@

venv: $(VENV)/.installed

kit: venv
	$(VENV)/bin/road-ds data fetch

# The whole pipeline on the real data kit (the plan recipes/road/demo.yaml): 3 teachers, their stores, a
# student with and without WKD; then its dev table (also in $(DEMO_OUT)/results.md).
demo: kit
	$(VENV)/bin/road-ds pipeline run recipes/road/demo.yaml --out $(DEMO_OUT)
	$(VENV)/bin/road-ds pipeline report recipes/road/demo.yaml --out $(DEMO_OUT) > $(DEMO_OUT)/results.md.tmp
	mv $(DEMO_OUT)/results.md.tmp $(DEMO_OUT)/results.md && cat $(DEMO_OUT)/results.md

# The linter first (pyproject.toml's [tool.ruff]); real-data tests need the kit: fetch it first, and make
# them fail (not skip) without it.
test: kit
	$(VENV)/bin/ruff check .
	ROAD_DS_REQUIRE_KIT=1 $(PY) -m pytest -q

# Benchmarks (speed and size targets are checked here, never by timed tests); tables go to docs/.
# On a CUDA GPU: bash bench/gpu.sh (docs/bench_gpu.md).
bench: kit
	$(PY) bench/kd_bench.py --out docs/bench_kd.md
	$(PY) bench/store_bench.py --out docs/bench_store.md

# road_ds against the Hugging Face Trainer and the examples' QA code (run_qa.py, utils_qa.py), which it
# loads from a transformers checkout: HF_EXAMPLES=<clone>/examples/pytorch/question-answering make bench-peer
bench-peer: kit
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/peer_bench.py --out docs/bench_peer.md $(if $(HF_EXAMPLES),--hf-examples $(HF_EXAMPLES),)

# The quality study: the plan recipes/study/plan.yaml, then its report (docs/results.md, .json, .png);
# a rerun skips finished jobs.
STUDY_JOBS ?= 2
study: kit
	$(VENV)/bin/road-ds pipeline run recipes/study/plan.yaml --jobs $(STUDY_JOBS)
	$(VENV)/bin/road-ds pipeline report recipes/study/plan.yaml --results docs/results.md

clean:
	rm -rf $(VENV) outputs .pytest_cache
