"""Containers: ``run_in: container`` jobs, ``make shell`` and the services in DOCKER_IMAGE_NAME, with docker or podman.

Used by the pipeline (its ``container`` executor, made by name), by ``speechbed.services`` and,
as ``python -m speechbed.pipeline.container``, by ``make docker``/``run_in_container``/``shell``.

Inside every container the repository is ``/workspace`` (the working directory) and
DATA_DIRECTORY, CACHE_DIRECTORY and ARTIFACTS_DIRECTORY are ``/storage/data``,
``/storage/cache`` and ``/storage/artifacts``; those variables, and every passed variable
whose value is a host path under a mounted folder, are rewritten to the container paths, so
``${VAR}``s in a job file resolve inside. A job gets only the variables it needs: the
testbed's folder settings, a few harmless locale/thread settings, the variables its job
file names as ``${VAR}`` (``speechbed.jobs.referenced_variables``) and those listed in
CONTAINER_PASS_ENV; nothing else of the runner's environment (credentials included) reaches
it. Values travel in the engine client's environment (``-e NAME`` on the command line), so
secrets never show in logs or ``ps``.

Modules, each importing only those before it:

- ``settings``: ``ContainerSettings`` from CONTAINER_ENGINE, DOCKER_IMAGE_NAME, CONTAINER_*.
- ``commands``: pure builders of mounts, variables, GPU flags and engine argv.
- ``executor``: ``ContainerExecutor``, engine/image checks, container removal.
- ``cli``: the ``build``/``run``/``shell`` command line (``__main__`` runs it).
"""
