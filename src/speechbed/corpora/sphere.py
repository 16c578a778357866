"""NIST SPHERE audio as TIMIT ships it: a NIST_1A text header, then uncompressed 16-bit PCM.

Used by corpus preparation (headers, sample counts), the feature cache (samples) and the synthetic corpus.

The header starts with the lines ``NIST_1A`` and the header size in bytes (``   1024``),
then one ``name -type value`` field per line (``-i`` integer, ``-r`` real, ``-sN`` string of
N bytes) up to ``end_head``; the rest of the header is padding. Samples follow the header.
Compressed SPHERE (``sample_coding`` other than plain PCM, e.g. shorten) is refused: convert
it first with NIST's ``w_decode`` or ``sph2pipe``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechbed.errors import UserInputError
from speechbed.outputs import atomic_output

SPHERE_MAGIC = b"NIST_1A"
#: The header size this module writes (TIMIT's own).
HEADER_BYTES = 1024
#: The sample rate read_sphere insists on unless told otherwise (TIMIT's).
TIMIT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SphereHeader:
    """The fields of a SPHERE header this project needs, plus every raw field."""

    header_bytes: int
    sample_count: int
    sample_rate: int
    channel_count: int
    sample_n_bytes: int
    byte_order: str  # "<" little endian (sample_byte_format 01) or ">" big endian (10)
    fields: dict[str, int | float | str]


def _parse_fields(path: Path, block: bytes) -> dict[str, int | float | str]:
    fields: dict[str, int | float | str] = {}
    lines = block.split(b"\n")
    for number, raw_line in enumerate(lines[2:], start=3):
        line = raw_line.strip()
        if not line or line.startswith(b";"):
            continue
        if line == b"end_head":
            return fields
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].startswith(b"-"):
            raise UserInputError(
                f"{path}: SPHERE header line {number} is not 'name -type value': {line!r}"
            )
        name, kind, value = parts[0].decode("ascii", "replace"), parts[1], parts[2]
        try:
            if kind == b"-i":
                fields[name] = int(value)
            elif kind == b"-r":
                fields[name] = float(value)
            elif kind.startswith(b"-s"):
                fields[name] = value.decode("ascii", "replace")
            else:
                raise ValueError(f"unknown field type {kind!r}")
        except ValueError as error:
            raise UserInputError(f"{path}: SPHERE header line {number} ({name}): {error}") from None
    raise UserInputError(f"{path}: SPHERE header has no 'end_head' line (truncated header?)")


def read_sphere_header(path: str | Path) -> SphereHeader:
    """Parse and check a SPHERE header: mono, 16-bit, uncompressed PCM; errors name the file."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            start = stream.read(HEADER_BYTES)
            if not start.startswith(SPHERE_MAGIC):
                raise UserInputError(
                    f"{path}: not a NIST SPHERE file (it does not start with NIST_1A); "
                    "TIMIT audio must be the LDC's SPHERE .WAV files"
                )
            try:
                header_bytes = int(start.split(b"\n")[1])
            except (IndexError, ValueError):
                raise UserInputError(
                    f"{path}: SPHERE header size (second line) is not a number"
                ) from None
            if header_bytes < len(SPHERE_MAGIC) or header_bytes % HEADER_BYTES:
                raise UserInputError(
                    f"{path}: SPHERE header size {header_bytes} is not a multiple of 1024"
                )
            block = start + stream.read(header_bytes - len(start))
    except OSError as error:
        raise UserInputError(f"{path}: cannot read audio: {error.strerror}") from None
    if len(block) < header_bytes:
        raise UserInputError(f"{path}: file ends inside its {header_bytes}-byte SPHERE header")
    fields = _parse_fields(path, block)
    coding = str(fields.get("sample_coding", "pcm")).lower()
    if coding != "pcm":
        raise UserInputError(
            f"{path}: compressed SPHERE (sample_coding {coding!r}) is not supported; "
            "decompress it first (sph2pipe -f sph, or NIST's w_decode)"
        )
    channels = int(fields.get("channel_count", 1))
    if channels != 1:
        raise UserInputError(f"{path}: {channels} channels; only mono SPHERE audio is supported")
    width = int(fields.get("sample_n_bytes", 2))
    if width != 2:
        raise UserInputError(
            f"{path}: {width}-byte samples; only 16-bit PCM SPHERE audio is supported"
        )
    if "sample_count" not in fields or "sample_rate" not in fields:
        raise UserInputError(f"{path}: SPHERE header lacks sample_count or sample_rate")
    byte_format = str(fields.get("sample_byte_format", "01"))
    if byte_format not in ("01", "10"):
        raise UserInputError(
            f"{path}: sample_byte_format {byte_format!r} is not 01 (little) or 10 (big endian)"
        )
    return SphereHeader(
        header_bytes=header_bytes,
        sample_count=int(fields["sample_count"]),
        sample_rate=int(fields["sample_rate"]),
        channel_count=channels,
        sample_n_bytes=width,
        byte_order="<" if byte_format == "01" else ">",
        fields=fields,
    )


def read_sphere(
    path: str | Path, expected_rate: int | None = TIMIT_SAMPLE_RATE
) -> tuple[np.ndarray, int]:
    """Read a SPHERE file: (int16 samples, sample rate). ``expected_rate=None`` accepts any rate."""
    path = Path(path)
    header = read_sphere_header(path)
    if expected_rate is not None and header.sample_rate != expected_rate:
        raise UserInputError(
            f"{path}: sample rate {header.sample_rate} Hz; expected {expected_rate} Hz"
        )
    with path.open("rb") as stream:
        stream.seek(header.header_bytes)
        data = stream.read(header.sample_count * 2)
    if len(data) < header.sample_count * 2:
        raise UserInputError(
            f"{path}: header says {header.sample_count} samples but the file holds "
            f"{len(data) // 2} (truncated file?)"
        )
    samples = np.frombuffer(data, dtype=np.dtype(header.byte_order + "i2")).astype(np.int16)
    return samples, header.sample_rate


def sphere_header_text(
    sample_count: int, sample_rate: int, fields: dict[str, int | str] | None = None
) -> bytes:
    """The 1024-byte NIST_1A header of a mono 16-bit little-endian PCM file."""
    lines = [
        "NIST_1A",
        f"{HEADER_BYTES:7d}",
    ]
    all_fields: dict[str, int | str] = dict(fields or {})
    all_fields.update(
        channel_count=1,
        sample_count=sample_count,
        sample_rate=sample_rate,
        sample_n_bytes=2,
        sample_byte_format="01",
        sample_sig_bits=16,
    )
    for name, value in all_fields.items():
        if isinstance(value, int):
            lines.append(f"{name} -i {value}")
        else:
            lines.append(f"{name} -s{len(str(value))} {value}")
    lines.append("end_head")
    text = ("\n".join(lines) + "\n").encode("ascii")
    if len(text) > HEADER_BYTES:
        raise ValueError(f"SPHERE header fields take {len(text)} bytes; at most 1024 fit")
    return text + b" " * (HEADER_BYTES - len(text))


def write_sphere(
    path: str | Path,
    samples: np.ndarray,
    sample_rate: int = TIMIT_SAMPLE_RATE,
    fields: dict[str, int | str] | None = None,
) -> None:
    """Write mono int16 samples as SPHERE (1024-byte NIST_1A header), atomically."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must be one-dimensional (mono), got shape {samples.shape}")
    if samples.dtype != np.int16:
        raise ValueError(f"samples must be int16, got {samples.dtype}")
    path = Path(path)
    if samples.size:
        extra = {"sample_min": int(samples.min()), "sample_max": int(samples.max())}
    else:
        extra = {}
    header = sphere_header_text(samples.size, sample_rate, {**(fields or {}), **extra})
    with atomic_output(path, needed_bytes=len(header) + 2 * samples.size) as temporary:
        with temporary.open("wb") as stream:
            stream.write(header)
            stream.write(samples.astype("<i2").tobytes())
