# speechbed environment: every variable the testbed reads, with its default.
#
# Copy this file to private/<machine>_local.sh, edit the values there (that
# folder is git-ignored, so credentials are safe) and pass it to make:
#     make pipeline yml=... ENV_FILE=private/<machine>_local.sh
# A variable already set in your shell wins over both files.
# `make check_environment` prints each value and where it came from.

# Repository root (where the Makefile is); the defaults below live under it.
export SPEECHBED_ROOT="${SPEECHBED_ROOT:-$(pwd)}"

# Corpora as distributed (the TIMIT LDC root is ${DATA_DIRECTORY}/timit).
export DATA_DIRECTORY="${DATA_DIRECTORY:-${SPEECHBED_ROOT}/storage/data}"
# Manifests and zarr feature caches made from the corpora.
export CACHE_DIRECTORY="${CACHE_DIRECTORY:-${SPEECHBED_ROOT}/storage/cache}"
# Run folders, logs, pipeline state, analysis tables and plots.
export ARTIFACTS_DIRECTORY="${ARTIFACTS_DIRECTORY:-${SPEECHBED_ROOT}/storage/artifacts}"

# GPUs the pipeline may lease (comma-separated ids); empty = CUDA_VISIBLE_DEVICES or nvidia-smi.
export SPEECHBED_GPUS="${SPEECHBED_GPUS:-}"
# Folder of per-GPU lock files shared by every pipeline on this machine.
export SPEECHBED_LEASE_DIR="${SPEECHBED_LEASE_DIR:-/tmp/speechbed-gpu-leases}"

# Container engine (docker or podman) and the image jobs with run_in: container use.
export CONTAINER_ENGINE="${CONTAINER_ENGINE:-docker}"
export DOCKER_IMAGE_NAME="${DOCKER_IMAGE_NAME:-speechbed:dev}"
# OCI runtime, e.g. /usr/sbin/runc (podman: `podman --runtime`; docker: `run --runtime`); empty = the engine's.
export CONTAINER_RUNTIME="${CONTAINER_RUNTIME:-}"
# How leased GPUs reach a container: gpus (docker --gpus), cdi (podman --device nvidia.com/gpu=N)
# or env (NVIDIA_VISIBLE_DEVICES only, for the nvidia runtime/hook); empty = gpus for docker, cdi for podman.
export CONTAINER_GPU_MODE="${CONTAINER_GPU_MODE:-}"
# --network for job containers (e.g. none); empty = the engine's default network.
export CONTAINER_NETWORK="${CONTAINER_NETWORK:-}"
# UID:GID the containers run as; empty = yours, so files they write are yours.
export CONTAINER_USER="${CONTAINER_USER:-}"
# Variables every container gets besides those its job file names as ${VAR} (comma-separated,
# e.g. COMET_API_KEY); nothing else of your environment reaches a container.
export CONTAINER_PASS_ENV="${CONTAINER_PASS_ENV:-}"
# podman only, for tests: run this host folder (e.g. /) as the root instead of the image, with
# CONTAINER_PYTHON naming the interpreter inside (default: python from the image's PATH).
export CONTAINER_ROOTFS="${CONTAINER_ROOTFS:-}"
export CONTAINER_PYTHON="${CONTAINER_PYTHON:-}"

# Slurm (jobs with run_in: slurm, or make pipeline ... run_in=slurm). The repository, its .venv
# and the storage folders above must lie on a filesystem the compute nodes share.
# Partition and account for every job; empty = the cluster's default partition / your account.
export SPEECHBED_SLURM_PARTITION="${SPEECHBED_SLURM_PARTITION:-}"
export SPEECHBED_SLURM_ACCOUNT="${SPEECHBED_SLURM_ACCOUNT:-}"
# Time limit per job (sbatch --time: minutes, HH:MM:SS or D-HH:MM:SS); empty = the partition's.
export SPEECHBED_SLURM_TIME="${SPEECHBED_SLURM_TIME:-}"
# Extra sbatch options, as shell words, for jobs without GPUs and for GPU jobs
# (e.g. "--qos=cpu" and "--constraint=a100 --cpus-per-gpu=8").
export SPEECHBED_SLURM_CPU_OPTIONS="${SPEECHBED_SLURM_CPU_OPTIONS:-}"
export SPEECHBED_SLURM_GPU_OPTIONS="${SPEECHBED_SLURM_GPU_OPTIONS:-}"
# How a job with num_gpus: N asks for them: gres (--gres=gpu:N) or gpus (--gpus=N); empty = gres.
export SPEECHBED_SLURM_GPU_REQUEST="${SPEECHBED_SLURM_GPU_REQUEST:-}"
# SIGUSR1 this many seconds before the time limit: training checkpoints, the job is requeued
# and resumes; after SPEECHBED_SLURM_MAX_REQUEUES requeues it fails. Empty = 300 and 3.
export SPEECHBED_SLURM_SIGNAL_SECONDS="${SPEECHBED_SLURM_SIGNAL_SECONDS:-}"
export SPEECHBED_SLURM_MAX_REQUEUES="${SPEECHBED_SLURM_MAX_REQUEUES:-}"
# Seconds between state queries (scontrol) per running job; empty = 10.
export SPEECHBED_SLURM_POLL_SECONDS="${SPEECHBED_SLURM_POLL_SECONDS:-}"
# 1 (default): the jobs of a step that share script and resources go in as one job array; 0: one sbatch per job.
export SPEECHBED_SLURM_ARRAYS="${SPEECHBED_SLURM_ARRAYS:-}"

# Host ports for JupyterLab, TensorBoard and optuna-dashboard (make dashboard).
export JUPYTER_HOST_PORT="${JUPYTER_HOST_PORT:-8888}"
export TENSORBOARD_HOST_PORT="${TENSORBOARD_HOST_PORT:-6006}"
export DASHBOARD_HOST_PORT="${DASHBOARD_HOST_PORT:-8080}"

# Google service-account JSON for the results sheet (keep it in private/).
export PATH_TO_GOOGLE_CREDENTIALS="${PATH_TO_GOOGLE_CREDENTIALS:-${SPEECHBED_ROOT}/private/google_credentials.json}"
# comet.ml API key; empty = offline archives in each run folder.
export COMET_API_KEY="${COMET_API_KEY:-}"

# Hyperparameter search storage for workers on several machines: a database URL
# (postgresql+psycopg://user:password@host:port/db; keep it in private/, it may hold a
# password). Empty = optuna's journal file under ${ARTIFACTS_DIRECTORY}/search/<study>/.
export SEARCH_STORAGE="${SEARCH_STORAGE:-}"
