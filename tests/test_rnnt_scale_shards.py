"""WebDataset shards (issue 17): written from a manifest, read back, split over ranks x workers."""

from __future__ import annotations

import collections
import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from speechbed.corpora.asr_manifest import entry_for_wav, manifest_path, write_manifest
from speechbed.corpora.shards import (
    INDEX_FILE,
    ShardDataset,
    WriteShardsJob,
    shard_name,
    slot_readings,
    write_shards,
)
from speechbed.step_runner import run_jobs_cli

ROOT = Path(__file__).resolve().parents[1]


def _corpus(folder: Path, count: int) -> tuple[list, dict[str, np.ndarray]]:
    """``count`` short 16-bit WAV utterances and their entries; audio by transcript."""
    rng = np.random.default_rng(0)
    entries, audio = [], {}
    for index in range(count):
        samples = rng.integers(-3000, 3000, size=800 + 37 * index).astype(np.int16)
        name = f"wav/{index % 3}/spk-{index:04d}.wav"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / name, samples, 16000, subtype="PCM_16")
        transcript = f"utterance number {index}"
        entries.append(entry_for_wav(transcript, name, len(samples)))
        audio[transcript] = samples.astype(np.float32) / 32768
    return entries, audio


def test_shards_round_trip_and_resume(tmp_path):
    entries, audio = _corpus(tmp_path, 7)
    summary = write_shards(entries, tmp_path, tmp_path / "shards", 3, progress=False)
    assert (summary.shards, summary.written, summary.utterances) == (3, 3, 7)
    with tarfile.open(tmp_path / "shards" / shard_name(2)) as tar:
        assert [member.name for member in tar.getmembers()] == [
            "000000006_spk-0006.flac",
            "000000006_spk-0006.txt",
        ]
    samples = list(ShardDataset(summary.pattern))
    assert [sample.transcript for sample in samples] == [entry.transcript for entry in entries]
    for sample in samples:  # FLAC is lossless: the 16-bit samples come back exactly
        np.testing.assert_array_equal(sample.audio.numpy(), audio[sample.transcript])
    # resume: a missing shard is written again, the others are kept as they are
    kept = (tmp_path / "shards" / shard_name(0)).stat().st_mtime_ns
    (tmp_path / "shards" / shard_name(1)).unlink()
    again = write_shards(entries, tmp_path, tmp_path / "shards", 3, progress=False)
    assert again.written == 1
    assert (tmp_path / "shards" / shard_name(0)).stat().st_mtime_ns == kept
    assert write_shards(entries, tmp_path, tmp_path / "shards", 3, progress=False).written == 0
    # other settings start over; the index says what the folder holds
    other = write_shards(entries, tmp_path, tmp_path / "shards", 4, progress=False)
    assert (other.shards, other.written) == (2, 2)
    assert not (tmp_path / "shards" / shard_name(2)).exists()
    index = json.loads((tmp_path / "shards" / INDEX_FILE).read_text())
    assert index["complete"] and [s["utterances"] for s in index["shards"]] == [4, 3]


def test_slot_readings_cover_every_utterance_once():
    for shards in range(1, 9):
        for slots in range(1, 9):
            taken = collections.Counter()
            for slot in range(slots):
                for reading in slot_readings(shards, slots, slot):
                    for utterance in range(reading.offset, 12, reading.stride):
                        taken[(reading.shard, utterance)] += 1
            assert taken == collections.Counter(
                {(shard, utterance): 1 for shard in range(shards) for utterance in range(12)}
            ), (shards, slots)


def _keys_over_ranks_and_workers(pattern: str, ranks: int, workers: int, epoch: int):
    per_slot = {}
    for rank in range(ranks):
        dataset = ShardDataset(pattern, shuffle_buffer=4, seed=3, rank=rank, world_size=ranks)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=workers, multiprocessing_context="fork"
        )
        per_slot[rank] = [sample.key for sample in loader]
    return per_slot


@pytest.mark.parametrize(("utterances", "per_shard"), [(23, 3), (23, 10)])
def test_ranks_and_workers_read_each_key_once(tmp_path, utterances, per_shard):
    """8 shards (uneven: 7 of 3 and one of 2) and 3 shards (fewer than the 4 slots) over
    2 ranks x 2 DataLoader workers: every key once per epoch, shuffled differently per epoch."""
    entries, _ = _corpus(tmp_path, utterances)
    summary = write_shards(entries, tmp_path, tmp_path / "shards", per_shard, progress=False)
    expected = sorted(f"{i:09d}_spk-{i:04d}" for i in range(utterances))
    orders, sizes = [], []
    for epoch in (0, 1):
        per_rank = _keys_over_ranks_and_workers(summary.pattern, 2, 2, epoch)
        keys = [key for rank_keys in per_rank.values() for key in rank_keys]
        assert sorted(keys) == expected  # no duplicates, no losses
        assert all(len(rank_keys) >= per_shard // 2 for rank_keys in per_rank.values())
        orders.append(keys)
        sizes.append([len(rank_keys) for rank_keys in per_rank.values()])
    assert orders[0] != orders[1]
    assert sizes[0] == sizes[1]  # each rank reads as many utterances in every epoch


def test_write_shards_script(tmp_path, capsys):
    """The job-file script, run in this process (its command line, not a subprocess)."""
    spec = importlib.util.spec_from_file_location("write_shards", ROOT / "scripts/write_shards.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    entries, _ = _corpus(tmp_path, 5)
    write_manifest(manifest_path(tmp_path, "train"), entries)
    job = tmp_path / "job.yml"
    job.write_text(
        f"manifests: [{manifest_path(tmp_path, 'train')}]\n"
        f"output_path: {tmp_path / 'shards'}\nutterances_per_shard: 2\n"
    )
    assert run_jobs_cli(WriteShardsJob, script.run, None, ["-y", str(job)]) == 0
    assert "5 utterances in 3 shard(s), 3 written now" in capsys.readouterr().out
    assert len(list(ShardDataset(tmp_path / "shards"))) == 5
    job.write_text(f"manifests: [{tmp_path / 'missing.json'}]\noutput_path: {tmp_path / 'x'}\n")
    assert run_jobs_cli(WriteShardsJob, script.run, None, ["-y", str(job)]) != 0
    assert "missing.json: manifest not found" in capsys.readouterr().err
