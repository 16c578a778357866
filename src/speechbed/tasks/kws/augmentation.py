"""Audio augmentation of the kws task's training clips: random time shift, background noise.

Called by speechbed.tasks.kws.task on training batches only (the trainer's ``augment``);
every draw comes from the generator it is given, so a resumed run draws the same.
"""

from __future__ import annotations

import torch


def shift_clips(audio: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each clip of ``(batch, samples)`` moved by a uniform ``-max_shift..max_shift`` samples,
    zeros filling the gap (what leaves the clip is lost)."""
    if max_shift <= 0:
        return audio
    batch, samples = audio.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator)
    padded = torch.nn.functional.pad(audio, (max_shift, max_shift))
    # output sample t of clip b is input sample t - shift[b]
    index = torch.arange(samples)[None, :] - shifts[:, None] + max_shift
    return torch.gather(padded, 1, index)


def mix_noise(
    audio: torch.Tensor,
    noise: torch.Tensor,
    probability: float,
    min_snr_db: float,
    max_snr_db: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A random ``noise`` clip mixed into a ``probability`` share of the clips, each at a
    uniform SNR in ``[min_snr_db, max_snr_db]`` (signal power over noise power; a silent
    clip gets no noise: its SNR is undefined)."""
    if probability <= 0 or len(noise) == 0:
        return audio
    batch = audio.shape[0]
    chosen = torch.rand(batch, generator=generator) < probability
    picks = noise[torch.randint(len(noise), (batch,), generator=generator)]
    snr = min_snr_db + (max_snr_db - min_snr_db) * torch.rand(batch, generator=generator)
    signal_power = audio.pow(2).mean(dim=1)
    noise_power = picks.pow(2).mean(dim=1).clamp_min(1e-12)
    scale = torch.sqrt(signal_power / (noise_power * 10.0 ** (snr / 10.0)))
    return audio + (scale * chosen)[:, None] * picks
