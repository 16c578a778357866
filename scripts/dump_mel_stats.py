"""Dump a training set's per-bin log-mel means and variances for streaming normalisation.

Reads the manifests (JSON, speechbed.corpora.asr_manifest) and their audio through the RNN-T
front end without its per-utterance normalisation or dither; writes output_path/{melmeans,
melvars,meln}.{pt,npy} (one atomic folder). The rnnt task's evaluation (data.mel_statistics)
starts its running statistics from them and puts them in the deployment checkpoint.
"""

from speechbed.features.streaming_normalization import DumpMelStatsJob, run_dump_mel_stats_job
from speechbed.step_runner import JobContext, run_jobs_cli


def run(job: DumpMelStatsJob, context: JobContext) -> None:
    statistics = run_dump_mel_stats_job(job)
    spread = statistics.variance.sqrt()
    print(
        f"dump_mel_stats: {statistics.count} frames, {len(statistics.mean)} bins (mean "
        f"{float(statistics.mean.min()):.2f}..{float(statistics.mean.max()):.2f}, std "
        f"{float(spread.min()):.2f}..{float(spread.max()):.2f}) -> {job.output_path}"
    )


if __name__ == "__main__":
    raise SystemExit(run_jobs_cli(DumpMelStatsJob, run, __doc__))
