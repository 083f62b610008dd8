"""Writing a float32 volume as a gzip-compressed NRRD straight from its numpy array.

``sitk.WriteImage`` needs an ``sitk.Image``, and making one from a numpy array copies every voxel: for the
Grad-CAM heatmap of a 1024 x 1024 x 200 image that is another 840 MB at the moment of the peak. Here the
array's bytes are compressed in blocks as they are, with the geometry in the header (NRRD 4, LPS space), which
ITK, SimpleITK and 3D Slicer read like their own files.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .volume import Volume

_BLOCK_BYTES = 1 << 24  # compressed 16 MiB at a time: memory stays flat whatever the volume's size
_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int16): "short",
          np.dtype(np.uint8): "unsigned char"}


def _vector(values) -> str:
    return "(" + ",".join(repr(float(v)) for v in values) + ")"


def nrrd_header(volume: Volume) -> str:
    """The NRRD 4 header of ``volume`` (little-endian, gzip encoding, LPS space).

    Args:
        volume: the voxels (their dtype must be one of float32, float64, int16, uint8) and geometry.

    Returns:
        The header text, ending with the blank line before the data.
    """
    dtype = volume.array.dtype
    if dtype not in _TYPES:
        raise ValueError(f"no NRRD type for {dtype}")
    i, j, k = volume.shape_ijk
    # column a of direction is index axis a in LPS; NRRD gives each axis as one vector including its spacing
    axes = " ".join(_vector(volume.direction[:, a] * volume.spacing[a]) for a in range(3))
    return (
        "NRRD0004\n"
        "# Complete NRRD file format specification at: http://teem.sourceforge.net/nrrd/format.html\n"
        f"type: {_TYPES[dtype]}\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {i} {j} {k}\n"
        f"space directions: {axes}\n"
        "kinds: domain domain domain\n"
        "endian: little\n"
        "encoding: gzip\n"
        f"space origin: {_vector(volume.origin)}\n"
        "\n"
    )


def write_nrrd(volume: Volume, path: str | Path, level: int = 1) -> None:
    """Write ``volume`` to ``path`` (a ``.nrrd`` file; the caller makes it atomic) without copying its voxels.

    Args:
        volume: the voxels in (k, j, i) order, which is NRRD's fastest-i order, and the geometry.
        path: the file to write.
        level: the zlib compression level (1: fast; heatmaps are mostly zeros and compress well at any level).
    """
    array = volume.array
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16 +: a gzip member, as NRRD wants
    with open(path, "wb") as handle:
        handle.write(nrrd_header(volume).encode("ascii"))
        for start in range(0, flat.size, _BLOCK_BYTES):
            handle.write(compressor.compress(flat[start:start + _BLOCK_BYTES]))
        handle.write(compressor.flush())
