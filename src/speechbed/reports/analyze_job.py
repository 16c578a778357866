"""The job schema of the analysis: which experiments' runs to gather, where, and what to report.

Read by ``scripts/analyze.py``; the sweep builds its ``analyze.yml`` from it. Kept free of
pandas and plotting so that the sweep stays light.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from speechbed.jobs import JobSchema
from speechbed.reports.settings import ReportSettings
from speechbed.run_folder import ExperimentFolder


class AnalyzeJob(JobSchema):
    """One analysis: the runs of one or more experiments into one analysis folder."""

    experiments: list[str] = Field(
        min_length=1, description="experiment names (folders under artifacts_directory)"
    )
    artifacts_directory: Path = Field(description="where the experiments' run folders are")
    runs: list[str] | None = Field(
        None, description="only these run ids (null: every run listed in runs.json)"
    )
    output_path: Path | None = Field(
        None, description="analysis folder (null: <artifacts>/<names joined by +>/analysis)"
    )
    report: ReportSettings = Field(default_factory=ReportSettings, description="reports to send")

    def output_folder(self) -> Path:
        joined = ExperimentFolder(self.artifacts_directory / "+".join(self.experiments))
        return self.output_path or joined.analysis

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        """Inputs: each experiment's runs.json and its runs' results and histories."""
        inputs = []
        for experiment in self.experiments:
            folder = ExperimentFolder(self.artifacts_directory / experiment)
            inputs.append(folder.index)
            for run_id in self.runs or sorted(folder.read_index()):
                run = folder.run(run_id)
                inputs += [run.results, run.history]
        return inputs, [self.output_folder()]
