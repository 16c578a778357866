"""Feature computers: fbank (STFT + mel triangles), sigbank (Gabor short integration) and raw, in torch.

Used by the cache builder (speechbed.features.build) and the benchmark. Each computer takes a
batch of 1-D signals holding the audio's int16 sample values (int16 or float arrays), scales
them as the settings' ``scale`` says, pads them into one tensor on its device and returns one
float32 (frames, dims) array per signal, equal to pydrobert-speech's ``FrameComputer`` with the
same settings on the same scaled samples (frames centred; see ``num_frames`` for the count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from speechbed.features.filterbanks import gabor_bank, hann_window, mel_triangle_weights
from speechbed.features.settings import FbankSettings, RawSettings, SigbankSettings

#: Coefficients are floored here before a log (as pydrobert-speech does).
LOG_FLOOR = 1e-5
#: Complex values filtered at once by the sigbank: on a CPU few enough to stay in cache,
#: on a GPU enough to fill it (128 MiB).
_SIGBANK_BLOCK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}


def _samples(milliseconds: float, sampling_rate: float) -> int:
    # the same float expression as pydrobert-speech, so both round alike
    return int(0.001 * milliseconds * sampling_rate)


def _pad_batch(signals: Sequence[np.ndarray], factor: float, device: torch.device) -> torch.Tensor:
    longest = max(len(signal) for signal in signals)
    batch = np.zeros((len(signals), longest), dtype=np.float32)
    for row, signal in enumerate(signals):
        batch[row, : len(signal)] = signal
    if factor != 1.0:
        batch *= np.float32(factor)  # a power of two: exact for int16 values
    return torch.from_numpy(batch).to(device)


def _modulus(values: torch.Tensor, use_power: bool) -> torch.Tensor:
    """|values| (or |values|^2) of complex or real values; sqrt(re^2 + im^2) is faster than abs."""
    if not values.is_complex():
        return values.square() if use_power else values.abs()
    power = values.real.square() + values.imag.square()
    return power if use_power else power.sqrt()


def _finish(values: torch.Tensor, use_log: bool) -> torch.Tensor:
    return torch.log(torch.clamp(values, min=LOG_FLOOR)) if use_log else values


class _BatchedComputer:
    """Pads a batch of signals into one tensor, computes, and cuts each signal's frames out."""

    device: torch.device
    num_features: int
    settings: FbankSettings | SigbankSettings

    def num_frames(self, num_samples: int) -> int:
        raise NotImplementedError

    def _compute(self, batch: torch.Tensor, lengths: torch.Tensor, most: int) -> torch.Tensor:
        """(B, samples) zero-padded signals -> (B, >= most frames, dims) features."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, signals: Sequence[np.ndarray]) -> list[np.ndarray]:
        counts = [self.num_frames(len(signal)) for signal in signals]
        results = [np.zeros((count, self.num_features), np.float32) for count in counts]
        busy = [row for row, count in enumerate(counts) if count]
        if not busy:
            return results
        batch = _pad_batch([signals[row] for row in busy], self.settings.scale_factor, self.device)
        lengths = torch.tensor([len(signals[row]) for row in busy], device=self.device)
        features = self._compute(batch, lengths, max(counts[row] for row in busy))
        features = features.cpu().numpy()
        for slot, row in enumerate(busy):
            results[row] = np.ascontiguousarray(features[slot, : counts[row]])
        return results


class FbankComputer(_BatchedComputer):
    """Centred frames, Hann window, |DFT| weighted by square-rooted mel triangles (x2 for the
    negative frequencies), and optionally the frame's RMS energy as coefficient 0.

    Frames start half a frame before the signal, which is mirrored at both ends (the edge
    sample repeated, as numpy's "symmetric" padding).
    """

    def __init__(self, settings: FbankSettings, device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        rate = settings.sampling_rate
        self.frame_length = _samples(settings.frame_length_ms, rate)
        self.frame_shift = _samples(settings.frame_shift_ms, rate)
        if self.frame_length < 1 or self.frame_shift < 1:
            raise ValueError(f"frames of {self.frame_length} samples every {self.frame_shift}")
        self.dft_size = self.frame_length
        if settings.pad_to_nearest_power_of_two:
            self.dft_size = 1 << math.ceil(math.log2(self.frame_length))
        weights = mel_triangle_weights(
            settings.num_filters, settings.low_hz, settings.high_hz, rate, self.dft_size
        )
        if settings.use_power:
            weights = weights**2
        self._weights = torch.from_numpy(2 * weights).to(self.device, torch.float32)
        self._window = torch.from_numpy(hann_window(self.frame_length)).to(
            self.device, torch.float32
        )
        self.num_features = settings.num_features

    def num_frames(self, num_samples: int) -> int:
        """Frames of a signal: none below half a frame, else one per shift, rounded."""
        if num_samples < self.frame_length // 2 + 1:
            return 0
        return (num_samples + self.frame_shift // 2) // self.frame_shift

    def _compute(self, batch: torch.Tensor, lengths: torch.Tensor, most: int) -> torch.Tensor:
        padded_length = (most - 1) * self.frame_shift + self.frame_length
        before = (self.frame_length + 1) // 2 - 1
        positions = torch.arange(padded_length, device=self.device) - before
        # mirror positions into [0, n): period 2n, the second half reversed
        period = torch.remainder(positions[None, :], 2 * lengths[:, None])
        mirrored = torch.where(period < lengths[:, None], period, 2 * lengths[:, None] - 1 - period)
        frames = torch.gather(batch, 1, mirrored).unfold(1, self.frame_length, self.frame_shift)
        spectrum = torch.fft.rfft(frames * self._window, n=self.dft_size)
        coefficients = _modulus(spectrum, self.settings.use_power) @ self._weights
        if self.settings.include_energy:
            energy = frames.square().mean(dim=-1, keepdim=True)
            if not self.settings.use_power:
                energy = energy.sqrt()
            coefficients = torch.cat([energy, coefficients], dim=-1)
        return _finish(coefficients, self.settings.use_log)


class SigbankComputer(_BatchedComputer):
    """Short integration: each Gabor filter's output modulus (or power) integrated with a Hann
    window two shifts long, one frame per shift, the window centred on the frame's sample;
    optionally coefficient 0 integrates the signal's own modulus. The signal is zero outside.

    Filtering is overlap-save FFT convolution in 4096-point blocks (small FFTs stay in cache),
    all blocks of a batch at once; each block's hop is whole shifts, so it integrates alone.
    """

    def __init__(self, settings: SigbankSettings, device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        rate = settings.sampling_rate
        self.frame_shift = _samples(settings.frame_shift_ms, rate)
        if self.frame_shift < 1:
            raise ValueError(f"a shift of {self.frame_shift} samples")
        self.bank = gabor_bank(
            settings.num_filters,
            settings.low_hz,
            settings.high_hz,
            rate,
            self.frame_shift,
            settings.pad_to_nearest_power_of_two,
        )
        window = hann_window(2 * self.frame_shift)
        self._window = torch.from_numpy(window.reshape(2, self.frame_shift).T.copy()).to(
            self.device, torch.float32
        )  # (shift, 2): first and second half
        # overlap-save blocks: small FFTs are faster per sample than whole-utterance ones,
        # and the hop is whole shifts so each block integrates on its own
        self._block = max(
            4096, 1 << math.ceil(math.log2(4 * (self.bank.length + self.frame_shift)))
        )
        self._hop = (self._block - self.bank.length + 1) // self.frame_shift * self.frame_shift
        taps = torch.from_numpy(self.bank.taps).to(self.device, torch.complex64)
        self._responses = torch.fft.fft(taps, n=self._block)
        self.num_features = settings.num_features

    def num_frames(self, num_samples: int) -> int:
        """One frame per shift, rounded to the nearest."""
        return (num_samples + self.frame_shift // 2) // self.frame_shift

    def _half_sums(self, values: torch.Tensor) -> torch.Tensor:
        """(..., n * shift) complex or real -> (..., n, 2): each block of ``shift`` samples'
        modulus dotted with the window's first and second half."""
        modulus = _modulus(values, self.settings.use_power)
        blocks = modulus.reshape(*modulus.shape[:-1], -1, self.frame_shift)
        return blocks @ self._window

    def _compute(self, batch: torch.Tensor, lengths: torch.Tensor, most: int) -> torch.Tensor:
        shift, delay, taps = self.frame_shift, self.bank.delay, self.bank.length
        # output q = 0 .. span-1 describes sample q - shift; filters reach taps - 1 back
        span = (most + 1) * shift
        hop, block = self._hop, self._block
        num_blocks = -(-span // hop)
        before = delay + shift - 1
        padded = torch.zeros((len(batch), (num_blocks - 1) * hop + block), device=self.device)
        kept = min(batch.shape[1], padded.shape[1] - before)
        padded[:, before : before + kept] = batch[:, :kept]
        halves = []  # each (B, dims, blocks of shift, 2)
        if self.settings.include_energy:
            own = padded[:, delay - 1 : delay - 1 + num_blocks * hop]
            halves.append(self._half_sums(own[:, None, :]))
        # overlap-save: every block's spectrum times every filter's, in cache-sized pieces
        spectra = torch.fft.fft(padded.unfold(1, block, hop).reshape(-1, block))
        pieces = []
        elements = _SIGBANK_BLOCK_ELEMENTS.get(self.device.type, 1 << 18)
        rows = max(1, elements // (block * self._responses.shape[0]))
        for first in range(0, spectra.shape[0], rows):
            product = spectra[first : first + rows, None, :] * self._responses
            filtered = torch.fft.ifft(product)[..., taps - 1 : taps - 1 + hop]
            pieces.append(self._half_sums(filtered))
        filtered_halves = torch.cat(pieces)  # (B * blocks, filters, hop // shift, 2)
        per_block = hop // shift
        filtered_halves = filtered_halves.reshape(len(batch), num_blocks, -1, per_block, 2)
        halves.append(
            filtered_halves.transpose(1, 2).reshape(len(batch), -1, num_blocks * per_block, 2)
        )
        summed = torch.cat(halves, dim=1)[:, :, : most + 1]
        frames = summed[:, :, :-1, 0] + summed[:, :, 1:, 1]
        return _finish(frames, self.settings.use_log).transpose(1, 2)


class RawComputer:
    """The signal itself as one column (frames are samples), scaled as ``scale`` says."""

    def __init__(self, settings: RawSettings, device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.num_features = 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples

    def __call__(self, signals: Sequence[np.ndarray]) -> list[np.ndarray]:
        factor = np.float32(self.settings.scale_factor)
        return [
            (np.asarray(signal, dtype=np.float32) * factor).reshape(-1, 1) for signal in signals
        ]


FeatureComputer = FbankComputer | SigbankComputer | RawComputer


def make_computer(
    settings: FbankSettings | SigbankSettings | RawSettings, device: str | torch.device = "cpu"
) -> FeatureComputer:
    """The computer for these settings, working on ``device`` (cpu or cuda)."""
    if isinstance(settings, FbankSettings):
        return FbankComputer(settings, device)
    if isinstance(settings, SigbankSettings):
        return SigbankComputer(settings, device)
    return RawComputer(settings, device)
