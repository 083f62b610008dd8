"""A deterministic synthetic pelvic T2-like MRI with lymph nodes of known size and shape.

A fixture for tests and the demo, never training data for a shipped model. Intensities are on an 8-bit
like scale (fat bright, muscle dark, nodes intermediate, as on T2-weighted MRI). Written as image +
labelmap + Slicer ``.seg.nrrd`` + ``truth.json`` (the analytic sizes of every node).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.measure import outline_axes
from ..io.atomic import atomic_path, write_text_atomic


@dataclass(frozen=True)
class PhantomNode:
    name: str
    kind: str  # "ellipsoid", "lobulated", "heterogeneous"
    centre_mm: tuple[float, float, float]  # LPS, relative to the volume centre
    semi_axes_mm: tuple[float, float, float]  # in-plane long, in-plane short, through-plane
    angle_deg: float = 0.0  # in-plane rotation of the long axis
    intensity: float = 110.0

    @property
    def short_axis_mm(self) -> float:
        """The true short axis of the mid-plane cross-section (docs/measurements.md's definition)."""
        return 2 * self.semi_axes_mm[1] if self.kind != "lobulated" else _lobulated_axes(self.semi_axes_mm)[1]

    @property
    def long_axis_mm(self) -> float:
        """The true long axis (largest Feret diameter) of the mid-plane cross-section."""
        return 2 * self.semi_axes_mm[0] if self.kind != "lobulated" else _lobulated_axes(self.semi_axes_mm)[0]


# the lobulated node: a core ellipse (LOBE_CORE x the semi-axes) and three disc-like bulges of radius
# LOBE_RADIUS x a centred LOBE_OFFSET x the semi-axes out at LOBE_ANGLES (radians, from the long axis)
LOBE_CORE, LOBE_OFFSET, LOBE_RADIUS, LOBE_ANGLES = 0.6, 0.62, 0.38, (0.0, 2.1, 4.2)


def _lobulated_axes(semi_axes_mm: tuple[float, float, float], samples: int = 7200) -> tuple[float, float]:
    """(long, short) axis of the lobulated node's mid-plane outline, from its exact (star-shaped) boundary.

    Along each ray from the centre the outline is the farther of the core ellipse's exit and the exit of any
    bulge the ray enters inside the core (the bulges overlap the core, so the union is one interval per ray).
    """
    a, b = semi_axes_mm[0], semi_axes_mm[1]
    phi = np.linspace(0, 2 * np.pi, samples, endpoint=False)
    ray = np.column_stack([np.cos(phi), np.sin(phi)])
    radius = 1.0 / np.sqrt((ray[:, 0] / (LOBE_CORE * a)) ** 2 + (ray[:, 1] / (LOBE_CORE * b)) ** 2)
    for angle in LOBE_ANGLES:
        centre = np.array([LOBE_OFFSET * a * np.cos(angle), LOBE_OFFSET * b * np.sin(angle)])
        along = ray @ centre
        disc = along**2 - (centre @ centre - (LOBE_RADIUS * a) ** 2)
        enter, leave = along - np.sqrt(np.maximum(disc, 0)), along + np.sqrt(np.maximum(disc, 0))
        radius = np.where((disc > 0) & (enter <= radius), np.maximum(radius, leave), radius)
    outline = ray * radius[:, None]
    return outline_axes([np.vstack([outline, outline[:1]])], tolerance_mm=0.0)


DEFAULT_NODES = (
    PhantomNode("Node small round", "ellipsoid", (-22.0, 10.0, 0.0), (2.5, 2.5, 3.0)),
    PhantomNode("Node 6 mm oval", "ellipsoid", (24.0, 12.0, -6.6), (4.0, 3.0, 4.0), angle_deg=20.0),
    PhantomNode("Node 8 mm oblique", "ellipsoid", (-20.0, 30.0, 6.6), (6.0, 4.0, 5.0), angle_deg=35.0),
    PhantomNode("Node 10 mm round", "ellipsoid", (22.0, 32.0, 0.0), (5.5, 5.0, 6.0), angle_deg=-15.0),
    PhantomNode("Node lobulated", "lobulated", (0.0, 42.0, -3.3), (6.0, 4.5, 4.0)),
    PhantomNode("Node heterogeneous", "heterogeneous", (-38.0, 0.0, 3.3), (5.0, 4.5, 5.0), angle_deg=10.0),
    PhantomNode("Lateral node", "ellipsoid", (52.0, 15.0, 0.0), (4.5, 3.8, 4.0), angle_deg=60.0),
)


PHANTOM_FILES = ("image.nrrd", "labels.nrrd", "segmentation.seg.nrrd", "truth.json")


def node_extent_mm() -> tuple[float, float, float]:
    """The largest |offset| + semi-axis of the fixed nodes from the volume centre, per LPS axis (mm)."""
    return tuple(max(abs(n.centre_mm[axis]) + max(n.semi_axes_mm) for n in DEFAULT_NODES) for axis in range(3))


@dataclass
class PhantomFiles:
    image: Path
    labelmap: Path
    segmentation: Path
    truth: Path


def _node_mask(node: PhantomNode, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """x, y, z: LPS mm relative to the node centre."""
    angle = np.deg2rad(node.angle_deg)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    a, b, c = node.semi_axes_mm
    if node.kind != "lobulated":
        return (u / a) ** 2 + (v / b) ** 2 + (z / c) ** 2 <= 1.0
    # a core ellipsoid with three bulges: an irregular (lobulated) border
    mask = (u / (LOBE_CORE * a)) ** 2 + (v / (LOBE_CORE * b)) ** 2 + (z / c) ** 2 <= 1.0
    for bulge_angle in LOBE_ANGLES:
        cu, cv = LOBE_OFFSET * a * np.cos(bulge_angle), LOBE_OFFSET * b * np.sin(bulge_angle)
        mask |= ((u - cu) ** 2 + (v - cv) ** 2) / (LOBE_RADIUS * a) ** 2 + (z / (0.8 * c)) ** 2 <= 1.0
    return mask


def random_nodes(count: int, seed: int) -> list[PhantomNode]:
    """Extra ellipsoidal nodes at seeded positions in the mesorectal fat ring (for benchmarks)."""
    rng = np.random.default_rng(seed)
    nodes = []
    for index in range(count):
        angle = 2 * np.pi * index / max(count, 1) + rng.uniform(-0.15, 0.15)
        radius = rng.uniform(24, 40)
        short = rng.uniform(2.0, 5.0)
        nodes.append(PhantomNode(
            f"Node {index + 1}", "ellipsoid",
            (radius * np.cos(angle), 20 + 0.8 * radius * np.sin(angle), rng.uniform(-25, 25)),
            (short * rng.uniform(1.0, 1.5), short, rng.uniform(3.0, 5.0)), angle_deg=float(rng.uniform(0, 180)),
        ))
    return nodes


def make_phantom(
    size: tuple[int, int, int] = (192, 192, 24),
    spacing: tuple[float, float, float] = (0.8, 0.8, 3.3),
    nodes: tuple[PhantomNode, ...] | list[PhantomNode] = DEFAULT_NODES,
    seed: int = 0,
) -> tuple[sitk.Image, sitk.Image, list[PhantomNode]]:
    """The phantom image (int16) and labelmap (uint8, label n = nodes[n - 1]); ``size`` is (i, j, k)."""
    rng = np.random.default_rng(seed)
    nk, nj, ni = size[2], size[1], size[0]
    # voxel (n // 2) sits at 0 mm, so node centres given in whole slices lie on a slice centre
    origin = -np.array([(ni // 2) * spacing[0], (nj // 2) * spacing[1], (nk // 2) * spacing[2]])
    z, y, x = np.meshgrid(
        origin[2] + np.arange(nk) * spacing[2], origin[1] + np.arange(nj) * spacing[1], origin[0] + np.arange(ni) * spacing[0],
        indexing="ij", sparse=True,
    )
    image = np.full((nk, nj, ni), 8.0, np.float32)  # air
    body = (x / (0.46 * ni * spacing[0])) ** 2 + (y / (0.40 * nj * spacing[1])) ** 2 <= 1.0
    image[np.broadcast_to(body, image.shape)] = 190.0  # fat
    muscle = ((np.abs(x) - 45) / 14) ** 2 + ((y - 30) / 22) ** 2 <= 1.0
    image[np.broadcast_to(muscle, image.shape)] = 65.0
    rectum_wall = (x / 16) ** 2 + ((y - 20) / 14) ** 2 <= 1.0
    rectum_lumen = (x / 9) ** 2 + ((y - 20) / 7) ** 2 <= 1.0
    image[np.broadcast_to(rectum_wall, image.shape)] = 85.0
    image[np.broadcast_to(rectum_lumen, image.shape)] = 140.0
    labels = np.zeros(image.shape, np.uint8)
    for label, node in enumerate(nodes, start=1):
        mask = _node_mask(node, x - node.centre_mm[0], y - node.centre_mm[1], z - node.centre_mm[2])
        labels[mask] = label
        if node.kind == "heterogeneous":
            texture = rng.normal(0, 28, image.shape).astype(np.float32)
            image[mask] = node.intensity + texture[mask]
        else:
            image[mask] = node.intensity
    # smooth bias field and Rician-like noise, as a real coil would give
    bias = 1.0 + 0.12 * (x / (ni * spacing[0])) - 0.08 * (y / (nj * spacing[1]))
    image = image * bias + np.abs(rng.normal(0, 6, image.shape))
    image_sitk = sitk.GetImageFromArray(np.clip(image, 0, 255).round().astype(np.int16))
    label_sitk = sitk.GetImageFromArray(labels)
    for item in (image_sitk, label_sitk):
        item.SetSpacing(spacing)
        item.SetOrigin(tuple(origin))
    return image_sitk, label_sitk, list(nodes)


SEGMENT_COLORS = ((0.9, 0.6, 0.2), (0.2, 0.6, 0.9), (0.6, 0.9, 0.2), (0.9, 0.3, 0.5), (0.5, 0.3, 0.9), (0.3, 0.8, 0.7))


def labelmap_to_seg_nrrd(labelmap: sitk.Image, names: list[str], destination: Path) -> None:
    """Write a single-layer Slicer ``.seg.nrrd`` whose segment n has label value n and name names[n - 1]."""
    seg = sitk.Image(labelmap)
    array = sitk.GetArrayViewFromImage(labelmap)
    seg.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    seg.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    seg.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for index, name in enumerate(names):
        value = index + 1
        k, j, i = np.nonzero(array == value)
        extent = f"{i.min()} {i.max()} {j.min()} {j.max()} {k.min()} {k.max()}" if len(i) else "0 -1 0 -1 0 -1"
        color = SEGMENT_COLORS[index % len(SEGMENT_COLORS)]
        for key, text in (
            ("ID", f"Segment_{value}"), ("Name", name), ("NameAutoGenerated", "0"),
            ("Color", " ".join(f"{c:g}" for c in color)), ("ColorAutoGenerated", "0"),
            ("LabelValue", str(value)), ("Layer", "0"), ("Extent", extent),
            ("Tags", "TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list~SCT^91723000^Anatomical Structure~SCT^59441001^Lymph node~^^~Anatomic codes - DICOM master list~^^~^^|"),
        ):
            seg.SetMetaData(f"Segment{index}_{key}", text)
    with atomic_path(destination) as temporary:
        sitk.WriteImage(seg, str(temporary), useCompression=True)


def write_phantom(out_dir: str | Path, size: tuple[int, int, int] = (192, 192, 24),
                  spacing: tuple[float, float, float] = (0.8, 0.8, 3.3), extra_nodes: int = 0, seed: int = 0) -> PhantomFiles:
    """Write the deterministic synthetic pelvic phantom (a test and demo fixture, never training data).

    Args:
        out_dir: the folder (created).
        size: image size (i, j, k) in voxels.
        spacing: voxel spacing (i, j, k) in mm.
        extra_nodes: random nodes added to the fixed ones.
        seed: the seed of the noise and the extra nodes.

    Returns:
        The paths of image.nrrd, labels.nrrd, segmentation.seg.nrrd and truth.json.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nodes = list(DEFAULT_NODES) + random_nodes(extra_nodes, seed + 1)
    image, labels, nodes = make_phantom(size, spacing, nodes, seed)
    files = PhantomFiles(out_dir / "image.nrrd", out_dir / "labels.nrrd", out_dir / "segmentation.seg.nrrd", out_dir / "truth.json")
    for item, path in ((image, files.image), (labels, files.labelmap)):
        with atomic_path(path) as temporary:
            sitk.WriteImage(item, str(temporary), useCompression=True)
    labelmap_to_seg_nrrd(labels, [node.name for node in nodes], files.segmentation)
    truth = {
        "description": "Synthetic phantom (LNMStaging): analytic node sizes; a test fixture, not training data.",
        "size_ijk": list(size), "spacing_mm": list(spacing), "seed": seed,
        "nodes": [dict(asdict(node), label_value=index + 1, short_axis_mm=node.short_axis_mm, long_axis_mm=node.long_axis_mm)
                  for index, node in enumerate(nodes)],
    }
    write_text_atomic(files.truth, json.dumps(truth, indent=2))
    return files
