"""Stages: a pipeline as a tree (nested pipelines expanded) and the slice ``--from/--to/--only`` pick.

Called by the pipeline command line, for ``--dry-run`` (the whole tree) and to run a slice.

The tree's leaves, in order, are the stages (icefall's ``stage``/``stop_stage``, the original
recipe's ``-s STAGE``). A NAME is a job's name at any depth, a path through nested pipelines
(``mcorr-train/train-0a1b2c3d4e``), or a job's name without its pipeline's ``<pipeline>-``
prefix (``train`` for ``mcorr-train``); a nested pipeline stands for all of its jobs.
``--from A`` runs A's first stage and every later one, ``--to B`` every stage up to B's last,
``--only N[,M...]`` just those. A nested pipeline with some of its stages picked gets them as
its own ``--only``; a job with none is left out of this run.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechbed.errors import UserInputError
from speechbed.pipeline.launch import step_command
from speechbed.pipeline.loader import PIPELINE_SCRIPT, Pipeline, load_pipeline
from speechbed.pipeline.plan import PlannedJob


@dataclass
class StageNode:
    """One job of the tree; a nested pipeline's jobs are its children."""

    job: PlannedJob
    path: str
    depth: int
    children: list[StageNode] = field(default_factory=list)

    def walk(self) -> Iterator[StageNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def leaves(self) -> list[StageNode]:
        return [node for node in self.walk() if not node.children]


def is_nested(job: PlannedJob) -> bool:
    return job.script.resolve() == (job.root / PIPELINE_SCRIPT).resolve()


def _nested_gpus(job: PlannedJob, gpus: list[int]) -> list[int]:
    arguments = list(job.args)
    if "--gpus" in arguments[:-1]:
        text = arguments[arguments.index("--gpus") + 1]
        return [int(item) for item in text.split(",") if item.strip().isdigit()]
    return gpus


def pipeline_tree(
    pipeline: Pipeline,
    environ: Mapping[str, str],
    gpus: list[int],
    root: Path,
    artifacts: Path,
    prefix: str = "",
    depth: int = 0,
) -> list[StageNode]:
    """The pipeline's jobs with every nested pipeline read (nothing is started)."""
    nodes = []
    for job in pipeline.jobs:
        node = StageNode(job, prefix + job.name, depth)
        if is_nested(job):
            try:
                nested = load_pipeline(
                    job.config, environ, _nested_gpus(job, gpus), root, artifacts, check_gpus=False
                )
            except UserInputError as error:
                raise UserInputError(f"nested pipeline {job.name}: {error}") from None
            node.children = pipeline_tree(
                nested, environ, gpus, root, artifacts, node.path + "/", depth + 1
            )
        nodes.append(node)
    return nodes


def _find(tree: list[StageNode], name: str) -> StageNode:
    every = [node for top in tree for node in top.walk()]
    for matches in (
        [node for node in every if node.path == name],
        [node for node in every if node.job.name == name],
        [node for node in every if node.job.name == f"{node.job.pipeline}-{name}"],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = ", ".join(node.path for node in matches)
            raise UserInputError(f"stage '{name}' names several jobs ({listed}); give its path")
    names = ", ".join(node.path for node in every[:30])
    raise UserInputError(f"stage '{name}' names no job of the pipeline; its jobs: {names}")


def select_stages(
    tree: list[StageNode],
    first: str | None = None,
    last: str | None = None,
    only: Sequence[str] | None = None,
) -> set[str]:
    """The paths of the picked stages (leaves)."""
    leaves = [leaf for top in tree for leaf in top.leaves()]
    position = {leaf.path: number for number, leaf in enumerate(leaves)}
    if only:
        if first or last:
            raise UserInputError("--only cannot be combined with --from/--to")
        names = [name for text in only for name in text.split(",") if name.strip()]
        return {leaf.path for name in names for leaf in _find(tree, name.strip()).leaves()}
    start = position[_find(tree, first).leaves()[0].path] if first else 0
    stop = position[_find(tree, last).leaves()[-1].path] if last else len(leaves) - 1
    if start > stop:
        raise UserInputError(f"--from {first} comes after --to {last} in the pipeline")
    return {leaf.path for leaf in leaves[start : stop + 1]}


def restrict(pipeline: Pipeline, tree: list[StageNode], picked: set[str]) -> Pipeline:
    """The pipeline with only the jobs that hold picked stages; a nested pipeline partly
    picked gets its part as ``--only``."""
    jobs = []
    for node in tree:
        leaves = [leaf.path for leaf in node.leaves()]
        chosen = [path for path in leaves if path in picked]
        if not chosen:
            continue
        job = node.job
        if node.children and len(chosen) < len(leaves):
            inner = [path.removeprefix(node.path + "/") for path in chosen]
            job = dataclasses.replace(job, args=(*job.args, "--only", ",".join(inner)))
        jobs.append(dataclasses.replace(job, index=len(jobs)))  # the scheduler's positions
    return dataclasses.replace(pipeline, jobs=jobs)


def command_of(job: PlannedJob) -> str:
    return shlex.join(
        step_command("python", str(job.script), str(job.config), job.args, job.processes)
    )
