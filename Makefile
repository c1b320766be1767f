# detrdistill: every target sets up what it needs (tools/setup_env.sh is idempotent and fast once built).
VENV ?= .venv
PY := $(VENV)/bin/python
FLAVOUR ?= cpu
TEACHER_CKPT ?= checkpoints/teacher_dino_synthetic.pth
DISTILL_CONFIG ?= configs/distill/detrdistill_dino_synthetic.py
TEACHER_CONFIG ?= configs/detectors/dino256_r18w16_synthetic_teacher.py
PYTEST_ARGS ?=

STUDENT_CONFIG ?= configs/detectors/dino128_r18w16_synthetic_student.py

.PHONY: setup data teacher baseline distill export test lint clean

setup:
	VENV=$(VENV) FLAVOUR=$(FLAVOUR) bash tools/setup_env.sh

data: setup
	$(PY) -m compress generate-data --out data/synthetic

# Reproduces the shipped teacher checkpoint (project code, config and seed 0).
teacher: data
	$(PY) -m compress train-teacher --config $(TEACHER_CONFIG) --work-dir work_dirs/teacher \
		--export-to $(TEACHER_CKPT) --half

# The student trained alone on the same data and schedule: the no-distillation baseline.
baseline: data
	$(PY) -m compress train-teacher --config $(STUDENT_CONFIG) --work-dir work_dirs/student_baseline

# The main job: data (if absent) -> teacher (if absent) -> DETRDistill student -> evaluation table.
distill: data
	@if [ ! -f $(TEACHER_CKPT) ]; then $(MAKE) teacher; fi
	$(PY) -m compress distill --config $(DISTILL_CONFIG) --work-dir work_dirs/distill

# ONNX export of the distilled student with parity and AP verification.
export: setup
	@if [ ! -f work_dirs/distill/student.pth ]; then echo "no student yet: run make distill first" >&2; exit 2; fi
	$(PY) -m compress export-onnx --config $(DISTILL_CONFIG) --checkpoint work_dirs/distill/student.pth \
		--out work_dirs/export/student.onnx

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf work_dirs .pytest_cache
