# detrdistill: every target sets up what it needs (tools/setup_env.sh is idempotent and fast once built).
VENV ?= .venv
PY := $(VENV)/bin/python
FLAVOUR ?= cpu
TEACHER_CKPT ?= checkpoints/teacher_dino_synthetic.pth
DISTILL_CONFIG ?= configs/distill/detrdistill_dino_synthetic.py
TEACHER_CONFIG ?= configs/detectors/dino256_r18w16_synthetic_teacher.py
PYTEST_ARGS ?=

STUDENT_CONFIG ?= configs/detectors/dino128_r18w16_synthetic_student.py
# Training runs bench-kd keeps side by side (each on cores / KD_JOBS threads): 2 finishes a 2-core CPU's
# matrix about 1.45x sooner than 1; on a single GPU use KD_JOBS=1.
KD_JOBS ?= 2
# Where bench-kd keeps its runs and report; a second student recipe needs its own (finished runs are reused).
KD_OUT ?= work_dirs/bench_kd
# Training iterations per bench-kd run; empty: the CLI's default (1500, the `make distill` schedule).
KD_ITERS ?=

.PHONY: setup data teacher teacher-4000it baseline distill bench-kd bench-kd-quick export export-trt export-triton bench serve bench-serve browser test lint clean

setup:
	VENV=$(VENV) FLAVOUR=$(FLAVOUR) bash tools/setup_env.sh

data: setup
	$(PY) -m compress generate-data --out data/synthetic

# Reproduces the shipped teacher checkpoint (project code, config and seed 0).
teacher: data
	$(PY) -m compress train-teacher --config $(TEACHER_CONFIG) --work-dir work_dirs/teacher \
		--export-to $(TEACHER_CKPT) --half

# The teacher trained twice as long: the shipped checkpoint continued 2000 iterations (33.7 AP against 16.3);
# configs/distill/detrdistill_dino_synthetic_teacher_4000it.py distils from it.
teacher-4000it: data
	@if [ ! -f checkpoints/teacher_dino_synthetic.pth ]; then $(MAKE) teacher; fi
	$(PY) -m compress train-teacher --config configs/detectors/dino256_r18w16_synthetic_teacher_4000it.py \
		--work-dir work_dirs/teacher_4000it --export-to checkpoints/teacher_dino_synthetic_4000it.pth --half

# The student trained alone on the same data and schedule: the no-distillation baseline.
baseline: data
	$(PY) -m compress train-teacher --config $(STUDENT_CONFIG) --work-dir work_dirs/student_baseline

# The main job: data (if absent) -> teacher (if absent) -> DETRDistill student -> evaluation table.
distill: data
	@if [ ! -f $(TEACHER_CKPT) ]; then $(MAKE) teacher; fi
	$(PY) -m compress distill --config $(DISTILL_CONFIG) --work-dir work_dirs/distill

# DETRDistill vs the student alone, each component alone, FitNet and MGD (3 seeds; --quick: 1 seed, short).
bench-kd: data
	@if [ ! -f $(TEACHER_CKPT) ]; then $(MAKE) teacher; fi
	$(PY) -m compress bench-kd --config $(DISTILL_CONFIG) --student-config $(STUDENT_CONFIG) \
		--jobs $(KD_JOBS) --out $(KD_OUT) $(if $(KD_ITERS),--iters $(KD_ITERS))

bench-kd-quick: data
	@if [ ! -f $(TEACHER_CKPT) ]; then $(MAKE) teacher; fi
	$(PY) -m compress bench-kd --quick --config $(DISTILL_CONFIG) --student-config $(STUDENT_CONFIG) \
		--jobs $(KD_JOBS) --out work_dirs/bench_kd_quick

# ONNX export of the distilled student with parity and AP verification.
export: setup
	@if [ ! -f work_dirs/distill/student.pth ]; then echo "no student yet: run make distill first" >&2; exit 2; fi
	$(PY) -m compress export-onnx --config $(DISTILL_CONFIG) --checkpoint work_dirs/distill/student.pth \
		--out work_dirs/export/student.onnx

# TensorRT engines (FP32 + FP16) of the ONNX export, verified; needs TensorRT and a CUDA GPU (FLAVOUR=gpu).
export-trt: setup
	$(PY) -m compress export-trt --onnx work_dirs/export/student.onnx --config $(DISTILL_CONFIG)

# A Triton model repository (config.pbtxt with dynamic batching + the model) in work_dirs/triton.
export-triton: setup
	$(PY) -m compress export-triton --model work_dirs/export/student.onnx --repo work_dirs/triton

# Teacher vs student latency on every backend present, with AP: table + JSON + PNG in work_dirs/bench.
bench: setup
	$(PY) -m compress bench --config $(DISTILL_CONFIG) --teacher $(TEACHER_CKPT) --student work_dirs/distill/student.pth

# The HTTP server on the exported student (python -m serve --help lists every flag; DETRDISTILL_* env vars).
SERVE_MODEL ?= work_dirs/export/student.onnx
HOST ?= 127.0.0.1
PORT ?= 8000
serve: setup
	$(PY) -m serve --model-path $(SERVE_MODEL) --host $(HOST) --port $(PORT)

# Starts a server, drives it at concurrency 1/4/16 next to the raw model; table + JSON + PNG in work_dirs/bench.
bench-serve: setup
	$(PY) tools/bench_serve.py --model $(SERVE_MODEL)

# Debian's headless Chromium and its WebDriver for the web page test (needs root or sudo and apt).
browser:
	@bash tools/install_browser.sh

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf work_dirs .pytest_cache
