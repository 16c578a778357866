"""The ``report`` section of an experiment: which reports the analysis step sends.

Read by the sweep (it copies the section into analyze.yml) and by ``scripts/analyze.py``.
"""

from __future__ import annotations

from pydantic import Field

from speechbed.jobs import JobSchema


class ReportSettings(JobSchema):
    """Which reports the analysis step sends, and where."""

    tensorboard: bool = Field(
        True,
        description="runs write TensorBoard events (runs without any get their hist.csv written "
        "as scalars); `make tensorboard` serves ${ARTIFACTS_DIRECTORY}",
    )
    comet: bool = Field(
        False,
        description="one comet.ml experiment per run: online with COMET_API_KEY, else an "
        "offline archive in <run_dir>/comet/",
    )
    comet_project: str = Field("speechbed", description="comet.ml project name")
    comet_workspace: str | None = Field(None, description="comet.ml workspace (null: your default)")
    google_sheet: bool = Field(
        False, description="upsert one row per run into a Google Sheet (PATH_TO_GOOGLE_CREDENTIALS)"
    )
    spreadsheet: str = Field(
        "speechbed results",
        description="title of the spreadsheet, shared with the service account's client_email",
    )
    worksheet: str | None = Field(None, description="worksheet title (null: the experiment name)")
