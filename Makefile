# Two commands do everything, each setting itself up on first use:
#   make demo   - run the main job: python pipelines/full.py on its embedded default (offline when no ClearML server)
#   make test   - run the whole test suite
# Everything else here is what those two call, plus benchmarks and lint.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
# Tests never reach the network: the proxy points at a closed local port.
OFFLINE_ENV := HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 \
	https_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
	YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 CLEARML_OFFLINE_MODE=1 NO_ALBUMENTATIONS_UPDATE=1

.PHONY: demo test setup weights triton-venv mediapipe-venv bench lint clean help int8-model
.DEFAULT_GOAL := help

help:
	@echo "make demo   run the pipeline (pipelines/full.py) on its embedded default"
	@echo "make test   run the whole test suite"
	@echo "make bench  run every benchmark (tables printed, JSON in benchmarks/results/)"
	@echo "make lint   ruff"
	@echo "make int8-model  build and verify the INT8 crop model (CAL_DIR=photos TEST_DIRS='other people')"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed weights triton-venv

# MediaPipe's hand models, read out of the mediapipe 0.10.21 wheel (downloaded once, cached).
weights: $(VENV)/.installed
	$(PY) -m components.weights fetch --cache_dir $(CACHE)/mediapipe

# The Triton server's own venv (numpy<2, bundled tritonserver from nvidia-pytriton).
# Idempotent: returns at once when .venv-triton matches requirements-triton.txt.
triton-venv:
	bash tools/setup_triton_venv.sh

demo: setup
	$(PY) pipelines/full.py

test: setup
	@# The live MediaPipe peer of the parity tests (tests/test_mediapipe_live_parity.py), built while the package
	@# index is still reachable; where it cannot be built the tests skip and say why.
	-$(PY) -c "from benchmarks.mediapipe_peer import ensure_venv; ensure_venv(quiet=False)"
	$(OFFLINE_ENV) $(PY) -m pytest -q

# MediaPipe Hands 0.10.21 in its own venv (it needs numpy<2): the peer of benchmarks/latency.py.
mediapipe-venv: $(VENV)/.installed
	$(PY) -c "from benchmarks.mediapipe_peer import ensure_venv; ensure_venv(quiet=False)"

bench: setup mediapipe-venv
	for b in data models train gmae tracking latency_runs close_ups triton; do \
		test -f benchmarks/$$b.py && $(OFFLINE_ENV) $(PY) -m benchmarks.$$b || exit 1; done

# The shipped INT8 crop model (shared/weights/blazehand_full_int8, see its MODEL_CARD.md): ONNX Runtime
# QDQ calibrated on the teacher's crops of CAL_DIR, verified on TEST_DIRS (other people: landmarks,
# hands found, the pipeline's gesture accuracy); the export refuses (exit 2) a model that misses a
# tolerance, and nothing is copied. Deterministic: the same photos give the same file.
CAL_DIR ?= ../shared/data/hagrid_train
TEST_DIRS ?= ../shared/data/hagrid_sample ../shared/data/roboflow_gestures_v6
INT8_OUT := outputs/export/int8
int8-model: setup
	$(OFFLINE_ENV) $(PY) -m components.export onnx --model_type blazehand_full --weights mediapipe --precision int8 \
		--dynamic_batch --calibration_dir $(CAL_DIR) --calibration_limit 2048 --test_dir $(TEST_DIRS) \
		--test_limit 256 --output_path $(INT8_OUT)/model.onnx
	# the same recipe verified (and timed) on OpenVINO: the same file, its own report
	$(OFFLINE_ENV) $(PY) -m components.export onnx --model_type blazehand_full --weights mediapipe --precision int8 \
		--runtime openvino --dynamic_batch --calibration_dir $(CAL_DIR) --calibration_limit 2048 \
		--test_dir $(TEST_DIRS) --test_limit 256 --output_path $(INT8_OUT)/openvino/model.onnx
	cmp $(INT8_OUT)/model.onnx $(INT8_OUT)/openvino/model.onnx
	mkdir -p shared/weights/blazehand_full_int8
	cp $(INT8_OUT)/model.onnx $(INT8_OUT)/model.json shared/weights/blazehand_full_int8/
	cp $(INT8_OUT)/openvino/model.json shared/weights/blazehand_full_int8/openvino.json

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean:
	rm -rf outputs runs .pytest_cache
