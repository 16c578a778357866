"""Tests of verified feature stores: damage is named, never read as zeros or a crash, and rebuilt.

Stores are damaged the ways people and crashes do it (a chunk file deleted, truncated or
changed in place, attributes edited, a build killed with SIGKILL); scripts/compute_features.py
runs as a real process where its exit code matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

import speechbed.features.store_writer as store_writer_module
from speechbed.corpora.manifest import manifest_path
from speechbed.errors import UserInputError
from speechbed.features import FeatureCache, FeatureStoreWriter
from speechbed.features.build import build_feature_cache
from speechbed.features.integrity import DamagedFeatureStore, check_store
from speechbed.features.settings import FEATURE_CODE_VERSION
from speechbed.lineage import FINGERPRINT_FILE, fingerprint
from speechbed.step_runner import run_with_lineage

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "scripts" / "compute_features.py"
sys.path.insert(0, str(REPOSITORY / "tests"))
sys.path.insert(0, str(REPOSITORY / "scripts"))
import compute_features  # noqa: E402
from test_features_cache import make_corpus  # noqa: E402

NUM_FEATURES = 3
CHUNK_FRAMES = 16


def write_store(path: Path, zeros: bool = False, seed: int = 3) -> np.ndarray:
    """A store of 6 utterances (100 frames, 16-frame chunks: 7 chunk files); returns the frames."""
    rng = np.random.default_rng(seed)
    counts = [10, 25, 5, 30, 20, 10]
    feats = [
        np.zeros((n, NUM_FEATURES), np.float32)
        if zeros
        else rng.standard_normal((n, NUM_FEATURES)).astype(np.float32)
        for n in counts
    ]
    ids = [f"u{i}" for i in range(len(counts))]
    tokens = [[i % 48] for i in range(len(counts))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_writer_module, "CHUNK_BYTES", CHUNK_FRAMES * 4 * NUM_FEATURES)
        with FeatureStoreWriter(path, ids, counts, NUM_FEATURES, tokens, {"partition": "t"}) as w:
            w.write(0, feats)
            w.commit()
    return np.concatenate(feats)


def chunk_file(store: Path, chunk: int) -> Path:
    return store / "feats" / "c" / str(chunk) / "0"


def write_job(folder: Path, extra: str = "") -> Path:
    job = folder / "job.yml"
    job.write_text(
        f"input_path: {folder / 'm'}\noutput_path: {folder / 'out'}\nfeature: fbank-81-10ms\n"
        f"partitions: [train]\n{extra}"
    )
    return job


def run_compute_features(job: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "-y", str(job)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)


def test_deleted_chunk_is_named_and_compute_features_rebuilds_the_store(tmp_path):
    make_corpus(tmp_path / "m")
    job = write_job(tmp_path)
    first = run_compute_features(job)
    assert first.returncode == 0, first.stderr
    store = tmp_path / "out" / "train.zarr"
    expected = FeatureCache(store).all_feats()
    chunk_file(store, 0).unlink()
    with pytest.raises(DamagedFeatureStore) as raised:
        FeatureCache(store)
    message = str(raised.value)
    assert str(store) in message and "feats" in message and "c/0/0" in message
    assert "missing" in message and "compute_features" in message
    assert isinstance(raised.value, UserInputError)

    again = run_compute_features(job)
    assert again.returncode == 0, again.stderr
    assert "damaged" in again.stdout and "c/0/0" in again.stdout and "rebuilt" in again.stdout
    np.testing.assert_array_equal(FeatureCache(store).all_feats(), expected)
    last = run_compute_features(job)
    assert last.returncode == 0 and "up to date" in last.stdout


def test_chunk_deleted_after_opening_is_never_read_as_zeros(tmp_path):
    frames = write_store(tmp_path / "s.zarr", zeros=True)
    assert not frames.any()
    assert chunk_file(tmp_path / "s.zarr", 3).is_file(), "a chunk of zeros is written too"
    small = 2 * CHUNK_FRAMES * NUM_FEATURES * 4  # no read-ahead: chunk 3 is read when needed
    cache = FeatureCache(tmp_path / "s.zarr", chunk_cache_bytes=small)
    chunk_file(tmp_path / "s.zarr", 3).unlink()  # frames 48-63: utterance 3 (40-69)
    np.testing.assert_array_equal(cache.feats(0), frames[:10])
    with pytest.raises(DamagedFeatureStore, match="chunk c/3/0: chunk file is missing"):
        cache.feats(3)
    with pytest.raises(DamagedFeatureStore, match="c/3/0"):
        cache.load_into_memory()


_READER = textwrap.dedent(
    """
    import sys
    import zarr
    from speechbed.errors import UserInputError
    from speechbed.features import FeatureCache

    path, chunk = sys.argv[1], sys.argv[2]
    try:  # zarr alone: the checksum is checked before blosc sees the bytes
        zarr.open_array(path + "/feats", mode="r")[:]
    except ValueError as error:
        assert "checksum" in str(error), error
    else:
        raise SystemExit("zarr read a truncated chunk")
    try:
        FeatureCache(path).all_feats()
    except UserInputError as error:
        print(error, file=sys.stderr)
        raise SystemExit(1)
    """
)


def test_truncated_chunk_is_a_clear_error_never_a_crash(tmp_path):
    store = tmp_path / "s.zarr"
    write_store(store)
    data = chunk_file(store, 1).read_bytes()
    chunk_file(store, 1).write_bytes(data[: len(data) // 2])
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(store), "c/1/0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    for reader in readers:
        _, error = reader.communicate(timeout=120)
        assert reader.returncode == 1, (reader.returncode, error)  # never -11 (SIGSEGV)
        assert "damaged feature store" in error and "chunk c/1/0" in error and str(store) in error


def test_edited_attributes_are_detected_and_rebuilt(tmp_path):
    make_corpus(tmp_path / "m")
    arguments = (tmp_path / "m", "train", "fbank-81-10ms", tmp_path / "c")
    built = build_feature_cache(*arguments, progress=False)
    zarr.open_group(built.path, mode="r+").attrs["num_frames"] = 7
    with pytest.raises(DamagedFeatureStore, match=r"attributes or metadata \(zarr.json\) changed"):
        FeatureCache(built.path)
    rebuilt = build_feature_cache(*arguments, progress=False)
    assert not rebuilt.skipped and "zarr.json" in rebuilt.damage
    assert FeatureCache(built.path).attributes["num_frames"] == built.num_frames
    metadata = built.path / "feats" / "zarr.json"  # an array's metadata counts too
    metadata.write_text(metadata.read_text().replace('"clevel": 5', '"clevel": 4'))
    with pytest.raises(DamagedFeatureStore, match="array feats: metadata"):
        FeatureCache(built.path)


def test_flipped_bytes_are_detected_on_reading_and_by_verify(tmp_path):
    store = tmp_path / "s.zarr"
    frames = write_store(store)
    path = chunk_file(store, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    check_store(store)  # every chunk is there with its size ...
    with pytest.raises(DamagedFeatureStore, match="c/2/0: chunk fails its checksum"):
        check_store(store, verify=True)  # ... but not with its bytes
    cache = FeatureCache(store, chunk_cache_bytes=2 * CHUNK_FRAMES * NUM_FEATURES * 4)
    np.testing.assert_array_equal(cache.feats(0), frames[:10])  # chunk 0
    np.testing.assert_array_equal(cache.feats(5), frames[90:])  # chunks 5 and 6
    with pytest.raises(DamagedFeatureStore, match="array feats, chunk c/2/0: chunk fails its"):
        cache.feats_many([2, 3, 4])  # chunks 2-5, one read
    with pytest.raises(DamagedFeatureStore, match="c/2/0"):
        FeatureCache(store, in_memory=True)


def test_verify_rebuilds_a_store_whose_chunk_changed_in_place(tmp_path, capsys):
    make_corpus(tmp_path / "m")
    arguments = (tmp_path / "m", "train", "raw", tmp_path / "c")
    built = build_feature_cache(*arguments, progress=False)
    path = chunk_file(built.path, 0)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    assert build_feature_cache(*arguments, progress=False).skipped  # sizes only: not seen
    verified = build_feature_cache(*arguments, progress=False, verify=True)
    assert not verified.skipped and "c/0/0" in verified.damage and "checksum" in verified.damage
    again = build_feature_cache(*arguments, progress=False, verify=True)
    assert again.skipped and again.verified_chunks >= 5
    # the job key, through the script's run function
    job = compute_features.ComputeFeaturesJob(
        input_path=tmp_path / "m",
        output_path=tmp_path / "c",
        feature="raw",
        partitions=["train"],
        verify=True,
    )
    compute_features.run(job, compute_features.JobContext(source=Path("j.yml"), index=0))
    assert "chunks verified" in capsys.readouterr().out


_KILLED_BUILD = textwrap.dedent(
    """
    import sys
    import time
    import speechbed.features.build as build

    write = build.FeatureStoreWriter.write

    def write_then_hang(self, *args, **kwargs):
        write(self, *args, **kwargs)
        print("written", flush=True)
        time.sleep(600)

    build.FeatureStoreWriter.write = write_then_hang
    manifests, output = sys.argv[1:]
    build.build_feature_cache(manifests, "train", "fbank-81-10ms", output, force=True)
    """
)


def test_sigkilled_build_leaves_a_partial_that_the_next_run_removes(tmp_path):
    make_corpus(tmp_path / "m")
    job = write_job(tmp_path)
    store = build_feature_cache(
        tmp_path / "m", "train", "fbank-81-10ms", tmp_path / "out", progress=False
    ).path
    before = fingerprint(store)
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, str(tmp_path / "m"), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert killed.stdout.readline().strip() == "written"
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    partial = tmp_path / "out" / f".train.zarr.partial-{killed.pid}"
    assert partial.is_dir() and (partial / "feats").is_dir()
    assert fingerprint(store) == before  # the store in place was never touched

    done = run_compute_features(job)
    assert done.returncode == 0, done.stderr
    assert not partial.exists() and f"removed {partial}" in done.stdout
    assert "up to date" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".zarr")) == [
        "train.zarr"
    ]
    FeatureCache(store)


def test_fingerprint_follows_content_not_rebuilds(tmp_path):
    make_corpus(tmp_path / "m")
    arguments = (tmp_path / "m", "train", "fbank-81-10ms", tmp_path / "c")
    store = build_feature_cache(*arguments, progress=False).path
    first = fingerprint(store)
    assert first == (store / FINGERPRINT_FILE).read_text().strip()
    assert build_feature_cache(*arguments, force=True, progress=False).path == store
    assert fingerprint(store) == first, "the same content rebuilt keeps its fingerprint"
    manifest = manifest_path(tmp_path / "m", "train")
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:2]))
    build_feature_cache(*arguments, progress=False)
    assert fingerprint(store) not in (None, first)


def test_fingerprint_sees_changed_frames_of_the_same_size(tmp_path):
    write_store(tmp_path / "a.zarr")
    write_store(tmp_path / "b.zarr", seed=9)
    record_a = json.loads((tmp_path / "a.zarr" / "speechbed-integrity.json").read_text())
    record_b = json.loads((tmp_path / "b.zarr" / "speechbed-integrity.json").read_text())
    sizes = [
        {key: size for key, (size, _) in r["arrays"]["feats"].items()} for r in (record_a, record_b)
    ]
    assert sizes[0] == sizes[1], "random frames do not compress: the same sizes"
    assert fingerprint(tmp_path / "a.zarr") != fingerprint(tmp_path / "b.zarr")


def test_old_stores_without_a_record_are_damaged(tmp_path):
    store = tmp_path / "s.zarr"
    write_store(store)
    (store / "speechbed-integrity.json").unlink()
    with pytest.raises(DamagedFeatureStore, match="no integrity record"):
        FeatureCache(store)
    assert FEATURE_CODE_VERSION >= 2  # settings hashes of older stores no longer match


def test_job_lineage_is_the_manifests_read_and_the_stores_written(tmp_path, monkeypatch):
    make_corpus(tmp_path / "m")
    job = compute_features.ComputeFeaturesJob(
        input_path=tmp_path / "m", output_path=tmp_path / "out", feature="raw"
    )
    inputs, outputs = job.lineage_paths()
    assert inputs == [manifest_path(tmp_path / "m", p) for p in ("dev", "train")]
    assert outputs == [tmp_path / "out" / "dev.zarr", tmp_path / "out" / "train.zarr"]
    assert job.code_versions == {"features": FEATURE_CODE_VERSION}
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path))
    context = compute_features.JobContext(source=tmp_path / "j.yml", index=0)
    lineage = run_with_lineage(job, context, compute_features.run)
    recorded = json.loads(json.dumps(lineage.to_json()))
    assert sorted(recorded["outputs"].values()) == sorted(fingerprint(p) for p in outputs)
    assert None not in recorded["inputs"].values() and len(recorded["inputs"]) == 2
