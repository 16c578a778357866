# speechbed: every target is one line. Settings come from setup/environment/default.sh,
# overridden by ENV_FILE=private/<machine>_local.sh when given (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV_FILE ?=
PY := .venv/bin/python
# Sources ENV_FILE, then the defaults (whose ${NAME:-default} lines fill only what is unset),
# so a copy of default.sh with edited defaults works; variables already set in the shell win.
WITH_ENV = set -a && if [ -n "$(ENV_FILE)" ]; then [ -f "$(ENV_FILE)" ] || { echo "error: ENV_FILE $(ENV_FILE) not found" >&2; exit 2; }; . "$(ENV_FILE)"; fi && . setup/environment/default.sh && set +a &&

yml ?=
gpus ?=
num_jobs ?=
args ?=
num_gpus ?=
run_in ?=
run ?=
only ?=
set ?=
demo_experiment ?= experiments/demo.yml
num_workers ?=

.PHONY: help install test bench lint clean pipeline check_environment experiment analyze demo tensorboard jupyter search dashboard

help:  ## list the targets
	@grep -E '^[a-z_]+:.*## ' Makefile | sed -E 's/:.*## /\t/' | expand -t 22

install:  ## create .venv with the project and its test extras (fast when already done)
	@bash setup/install.sh

test: install  ## run the whole test suite
	$(WITH_ENV) $(PY) -m pytest tests

bench: install  ## print the benchmark tables (ratios against baselines measured in the same run)
	$(WITH_ENV) $(PY) benchmarks/run_all.py

lint: install  ## ruff check and format check
	$(PY) -m ruff check src scripts tests benchmarks && $(PY) -m ruff format --check src scripts tests benchmarks

clean:  ## remove build outputs and caches (keeps storage/ and .venv)
	rm -rf build .pytest_cache .ruff_cache .hypothesis src/*.egg-info && find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

pipeline: install  ## run a pipeline: make pipeline yml=FILE [gpus=0,1] [num_jobs=N] [run_in=host|container|slurm] [args="--force ..."]
	$(WITH_ENV) $(PY) scripts/pipeline.py -y $(yml) $(if $(gpus),--gpus $(gpus)) $(if $(num_jobs),--num_jobs $(num_jobs)) $(if $(run_in),--run_in $(run_in)) $(args)

.PHONY: docker run_in_container shell
command ?=

docker: install  ## build the image DOCKER_IMAGE_NAME with CONTAINER_ENGINE, owned by your uid/gid [args="--build-arg TORCH_CUDA_ARCH_LIST=9.0"]
	$(WITH_ENV) $(PY) -m speechbed.pipeline.container build $(args)

run_in_container: install  ## run a command in the image (repo at /workspace): make run_in_container command="python scripts/X.py -y F.yml" [gpus=0,1]
	$(WITH_ENV) $(PY) -m speechbed.pipeline.container run $(if $(gpus),--gpus $(gpus)) -- $(command)

shell: install  ## an interactive shell in the image, repository at /workspace, storage at /storage/* [gpus=0,1]
	$(WITH_ENV) $(PY) -m speechbed.pipeline.container shell $(if $(gpus),--gpus $(gpus))

check_environment: install  ## print every testbed variable, where its value came from, and what is missing
	$(PY) -m speechbed.environment --env-file "$(ENV_FILE)"

experiment: install  ## expand a sweep: make experiment yml=experiments/X.yml [num_gpus=N] [num_jobs=M] [run_in=host|container|slurm] [gpus=0,1] [run=1] [only="seed=1-5"] [set="training.num_epochs=2"] [args=--dry-run]
	$(WITH_ENV) $(PY) scripts/sweep_experiment.py -y $(yml) $(if $(num_gpus),--num_gpus $(num_gpus)) $(if $(num_jobs),--num_jobs $(num_jobs)) $(if $(run_in),--run_in $(run_in)) $(if $(gpus),--gpus $(gpus)) $(if $(run),--run) $(if $(only),--only "$(only)") $(if $(set),--set "$(set)") $(args)

analyze: install  ## tables, plots and reports of an expanded experiment: make analyze yml=experiments/out/NAME/analyze.yml [args=--dry-run]
	$(WITH_ENV) $(PY) scripts/analyze.py -y $(yml) $(args)

# make demo recipe=NAME: the recipe's synthetic data pipeline, then its demo experiment.
recipe ?= timit
demo_data_timit := data_prep/synthetic/demo.yml
demo_data_kws := data_prep/speech_commands/synthetic/pipeline.yml
demo_data_rnnt := data_prep/synthetic_librispeech/pipeline.yml
demo_data_separation := data_prep/synthetic_mixtures/pipeline.yml
demo_experiment_kws := experiments/kws_demo.yml
demo_experiment_rnnt := experiments/rnnt_demo.yml
demo_experiment_separation := experiments/separation_demo.yml

demo: install  ## a whole study on a synthetic corpus: data -> demo sweep -> analysis [recipe=timit|kws|rnnt|separation] [run_in=...]; resumes, instant when done
	@[ -n "$(demo_data_$(recipe))" ] || { echo "error: recipe=$(recipe) is not a recipe (timit, kws, rnnt, separation)" >&2; exit 2; }
	$(WITH_ENV) $(PY) scripts/pipeline.py -y $(demo_data_$(recipe)) $(if $(run_in),--run_in $(run_in)) && $(PY) scripts/sweep_experiment.py -y $(or $(demo_experiment_$(recipe)),$(demo_experiment)) --num_jobs $(or $(num_jobs),2) $(if $(run_in),--run_in $(run_in)) --run

search: install  ## hyperparameter search: make search yml=experiments/search/X.yml [num_workers=N] [num_gpus=1] [run_in=host|container|slurm] [gpus=0,1]
	$(WITH_ENV) $(PY) scripts/search.py -y $(yml) --num_workers $(or $(num_workers),1) $(if $(num_gpus),--num_gpus $(num_gpus)) $(if $(run_in),--run_in $(run_in)) $(if $(gpus),--gpus $(gpus)) $(args)

dashboard: install  ## serve a search study with optuna-dashboard on loopback: make dashboard yml=experiments/search/X.yml [args="--port N | --stop"]
	$(WITH_ENV) $(PY) -m speechbed.services dashboard $(if $(yml),--yml $(yml)) $(args)

tensorboard: install  ## serve ${ARTIFACTS_DIRECTORY} with TensorBoard on loopback [args="--port N | --host 0.0.0.0 | --stop"]
	$(WITH_ENV) $(PY) -m speechbed.services tensorboard $(args)

jupyter: install  ## start JupyterLab (token) on loopback [args="--port N | --host 0.0.0.0 | --stop"]
	$(WITH_ENV) ($(PY) -c 'import jupyterlab' 2>/dev/null || .venv/bin/pip install --quiet -e ".[notebook]") && $(PY) -m speechbed.services jupyter $(args)
