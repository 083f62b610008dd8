"""Checks that make an untrusted bundle safe to open: no symbolic links (to files outside, devices, loops),
architecture sizes within sane limits, and weights whose safetensors header shapes match the configured
architecture, all before any module is built or any tensor allocated."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from ..errors import BundleError

# The largest sizes any sensible node-patch model has (the shipped one: base 12, latent 8, patch 32, hidden 128):
# far above them, an altered config.json would make the loader allocate gigabytes before anything failed.
LIMITS = {"patch_size": 512, "base": 1024, "latent_size": 1024, "latent_dim": 65536, "kernel_size": 15,
          "in_channels": 16, "patch_hidden": 1 << 16, "patient_hidden": 1 << 16, "max_patches": 10000,
          "blocks": 16, "channel_mult": 64}
MAX_HEADER_BYTES = 16 << 20
MAX_MEMBER_PARAMETERS = 200_000_000
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def refuse_links(bundle_dir: Path) -> None:
    """Refuse any symbolic link (or other non-regular file) inside a bundle, without following any.

    Args:
        bundle_dir: the bundle folder (itself may be reached through a link).
    """
    for root, folders, files in os.walk(bundle_dir, followlinks=False):
        for name in folders + files:
            path = Path(root) / name
            if path.is_symlink():
                raise BundleError(path, "is a symbolic link: a bundle must hold its own files (links are refused)")
            if name in files and not path.is_file():
                raise BundleError(path, "is not a regular file (device, pipe or socket): refused in a bundle")


def check_architecture_limits(vae, mils, source: Path) -> None:
    """Refuse sizes beyond :data:`LIMITS` before anything is built.

    Args:
        vae: the bundle's VAEConfig.
        mils: every member's MILConfig.
        source: config.json, for the message.
    """
    values = {"patch_size": vae.patch_size, "base": vae.base, "latent_size": vae.latent_size,
              "latent_dim": vae.latent_dim, "kernel_size": vae.kernel_size, "in_channels": vae.in_channels,
              "blocks": len(vae.channel_mults), "channel_mult": max(vae.channel_mults, default=1)}
    for mil in mils:
        for key in ("patch_hidden", "patient_hidden", "max_patches"):
            values[key] = max(values.get(key, 0), int(getattr(mil, key)))
    for key, value in values.items():
        if not 0 < int(value) <= LIMITS[key]:
            raise BundleError(source, f"architecture size {key} = {value} is outside the sane range 1-{LIMITS[key]}: "
                                      "refused before building the model")


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a safetensors file's header, checked against the file's size.

    Args:
        path: the weights file.

    Returns:
        The header's tensors (metadata left out).
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BundleError(path, "truncated weights: no safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise BundleError(path, f"not a safetensors file (header length {length} for a {size}-byte file)")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BundleError(path, "not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise BundleError(path, "not a safetensors file (header is not an object)")
    tensors, data_bytes = {}, size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise BundleError(path, f"tensor {name!r} has a malformed header entry") from None
        count = 1
        for n in shape:
            count *= n
        if dtype not in _DTYPE_BYTES or min(shape, default=1) < 0 or not 0 <= start <= end <= data_bytes \
                or end - start != count * _DTYPE_BYTES[dtype]:
            raise BundleError(path, f"tensor {name!r}: dtype {dtype}, shape {list(shape)} and offsets do not fit the file")
        tensors[name] = (dtype, shape)
    return tensors


# (vae, mil) config reprs and head count -> the state's shapes
_EXPECTED_SHAPES: dict[tuple[str, str, int], dict[str, tuple[int, ...]]] = {}


def check_member_shapes(path: Path, vae, mil, n_heads: int = 0) -> None:
    """Compare a member file's tensor shapes with the architecture the config declares, by building that
    architecture on torch's ``meta`` device (no memory) after the size limits passed.

    Args:
        path: the member's safetensors file.
        vae: the VAEConfig; mil: the member's MILConfig.
        n_heads: the member's classifier heads (config ``head_calibrations``), each of ``mil``'s architecture.
    """
    import torch

    from ..models.member import ModelMember

    stored = read_safetensors_header(path)
    parameters = sum(_count(shape) for _, shape in stored.values())
    if parameters > MAX_MEMBER_PARAMETERS:
        raise BundleError(path, f"holds {parameters} parameters, above the sane {MAX_MEMBER_PARAMETERS}")
    key = (repr(vae), repr(mil), int(n_heads))
    expected = _EXPECTED_SHAPES.get(key)
    if expected is None:  # built once per architecture, not once per member
        with torch.device("meta"):
            expected = {name: tuple(t.shape) for name, t in ModelMember(vae, mil, n_heads).state_dict().items()}
        _EXPECTED_SHAPES[key] = expected
    if set(expected) != set(stored):
        missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        raise BundleError(path, f"weights do not fit the configured architecture (missing {missing[:3]}, "
                                f"unexpected {extra[:3]})")
    for name, shape in expected.items():
        if stored[name][1] != shape:
            raise BundleError(path, f"weights do not fit the configured architecture: {name} is "
                                    f"{list(stored[name][1])} in the file, {list(shape)} in config.json")


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count
