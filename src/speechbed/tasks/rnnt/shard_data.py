"""The rnnt task's training batches from WebDataset shards (``data.train_shards``).

Called by speechbed.tasks.rnnt.task's ``open_loader`` for the training partition when the data
section names shards (scripts/write_shards.py writes them). Utterances stream from the shards
(speechbed.corpora.shards: split over ranks and DataLoader workers, shuffled with a buffer);
each worker sorts runs of ``BUCKET_BATCHES`` batches' worth of utterances by length, cuts them
into batches and shuffles those, as the manifest loader's length buckets do.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from speechbed.corpora.shards import ShardDataset, read_shard_index, slot_readings
from speechbed.corpora.text_normalization import normalize_transcript
from speechbed.corpora.tokenizer import Tokenizer
from speechbed.errors import UserInputError
from speechbed.tasks.rnnt.config import RnntDataConfig
from speechbed.tasks.rnnt.data import SpeechBatch, Utterance, collate_speech

#: Utterances sorted by length together, in batches.
BUCKET_BATCHES = 8


class ShardSpeechBatches(IterableDataset):
    """``SpeechBatch`` es of the utterances one (rank, worker) slot reads of the shards."""

    def __init__(
        self,
        shards: ShardDataset,
        tokenizer: Tokenizer,
        batch_size: int,
        normalize: bool,
    ) -> None:
        super().__init__()
        self.shards, self.tokenizer = shards, tokenizer
        self.batch_size, self.normalize = batch_size, normalize

    def _batches(self, run: list[Utterance], rng: random.Random) -> Iterator[SpeechBatch]:
        run.sort(key=lambda item: len(item.audio))
        batches = [run[i : i + self.batch_size] for i in range(0, len(run), self.batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield collate_speech(batch)

    def __iter__(self) -> Iterator[SpeechBatch]:
        rng = random.Random(f"{self.shards.seed}-{self.shards.epoch}-batches")
        run: list[Utterance] = []
        for sample in self.shards:
            text = normalize_transcript(sample.transcript) if self.normalize else sample.transcript
            tokens = torch.tensor(self.tokenizer.encode(text), dtype=torch.int32)
            run.append(Utterance(sample.key, sample.audio, tokens, text))
            if len(run) == self.batch_size * BUCKET_BATCHES:
                yield from self._batches(run, rng)
                run = []
        yield from self._batches(run, rng)


class ShardBatchLoader:
    """What the trainer reads of a training loader, over shards: its batches, their number per
    epoch and ``batch_sampler.set_epoch``. The shards split themselves over ranks: a
    data-parallel trainer takes each rank's loader (``for_rank``, ``splits_across_ranks``,
    speechbed.training.distributed), whose ranks may hold unequal numbers of batches."""

    splits_across_ranks = True

    def __init__(self, batches: ShardSpeechBatches, num_workers: int) -> None:
        self.batches = batches
        self.num_workers = num_workers
        self.batch_sampler = self  # the trainer calls loader.batch_sampler.set_epoch
        self.dataset = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.shards.set_epoch(epoch)

    def for_rank(self, rank: int, world_size: int) -> ShardBatchLoader:
        """The loader of one rank's part of every epoch."""
        shards = copy.copy(self.batches.shards)
        shards.rank, shards.world_size = rank, world_size
        batches = copy.copy(self.batches)
        batches.shards = shards
        return ShardBatchLoader(batches, self.num_workers)

    def __iter__(self) -> Iterator[SpeechBatch]:
        loader = DataLoader(self.batches, batch_size=None, num_workers=self.num_workers)
        return iter(loader)

    def rank_batch_counts(self) -> list[int]:
        """The batches each rank reads in an epoch (from the utterance counts in shards.json):
        its (rank, worker) slots' utterances cut into batches, slot by slot."""
        shards = self.batches.shards
        index = read_shard_index(shards.urls)
        if index is None or len(index["shards"]) != len(shards.urls):
            raise UserInputError(
                f"data.train_shards: {shards.urls[0]}: training needs the shards' shards.json "
                "beside them (scripts/write_shards.py writes it), listing these shards"
            )
        world_size = shards.rank_and_world()[1]
        workers = max(1, self.num_workers)
        counts = []
        for rank in range(world_size):
            batches = 0
            for slot in range(rank * workers, (rank + 1) * workers):
                kept = 0
                for reading in slot_readings(len(shards.urls), world_size * workers, slot):
                    count = index["shards"][reading.shard]["utterances"]
                    kept += len(range(reading.offset, count, reading.stride))
                batches += math.ceil(kept / self.batches.batch_size)
            counts.append(batches)
        return counts

    def __len__(self) -> int:
        """Batches per epoch of this loader's rank (all of them for one process)."""
        return self.rank_batch_counts()[self.batches.shards.rank_and_world()[0]]


def open_shard_loader(
    data: RnntDataConfig, tokenizer: Tokenizer, seed: int, batch_size: int | None
) -> ShardBatchLoader:
    """The training loader over ``data.train_shards``."""
    shards = ShardDataset(data.train_shards, shuffle_buffer=data.shuffle_buffer, seed=seed)
    batches = ShardSpeechBatches(
        shards, tokenizer, batch_size or data.batch_size, data.normalize_transcripts
    )
    return ShardBatchLoader(batches, data.num_workers)
