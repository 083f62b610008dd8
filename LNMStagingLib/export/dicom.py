"""DICOM exports of a prediction, written with highdicom: the node segmentation as DICOM SEG (one
segment per node, its result in the segment's tracking id) and the per-node results as a Comprehensive 3D SR
TID 1500 measurement report (probability, short axis, long axis per node), each node's measurement group
referencing its SEG segment and, through it, the source series.

Only a case whose image is a DICOM series can be exported: SEG and SR reference the source instances (their
UIDs, patient and study), which an NRRD or NIfTI image does not have. UIDs derive from the report's content,
so exporting the same report twice gives the same objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..imaging.case import Case, load_case
from ..io.atomic import add_to_listing, atomic_directory
from ..io.image import preserved_locale

DICOM_DIR = "dicom"
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
MANUFACTURER = "LNMStaging (research use only)"
PROBABILITY_CODE = ("LNM-P", "99LNMSTAGING", "Probability of lymph node metastasis")  # private: no standard code
ALGORITHM_NAME = "LNMStaging VAE-MLP"


def series_files(folder: Path) -> list[Path]:
    """The files of the folder's one DICOM series in the order SimpleITK stacks them (slice k = file k)."""
    import SimpleITK as sitk

    with preserved_locale():
        reader = sitk.ImageSeriesReader()
        ids = reader.GetGDCMSeriesIDs(str(folder))
        if len(ids) != 1:
            raise InputError(folder, f"holds {len(ids)} DICOM series; the export needs exactly one")
        return [Path(name) for name in reader.GetGDCMSeriesFileNames(str(folder), ids[0])]


def why_not_exportable(image: str | Path) -> str | None:
    """None when ``image`` is a DICOM series folder, else the one-line reason why no DICOM export is made."""
    if Path(image).is_dir():
        return None
    return (f"no DICOM export: the image {Path(image).name} is not a DICOM series, and DICOM SEG/SR must "
            "reference the source DICOM instances (give the DICOM series folder as the image)")


def _uid(report: dict[str, Any], what: str) -> str:
    from pydicom.uid import generate_uid

    sources = [json.dumps(report["patient"], sort_keys=True), json.dumps(report["nodes"], sort_keys=True),
               report["model"]["manifest_sha256"], str(report["input"]["image"]), what]
    return str(generate_uid(entropy_srcs=sources))


def _segment_pixels(case: Case, node_ids: list[int]) -> np.ndarray:
    """(frames, rows, columns, segments) bool masks of ``node_ids`` on the image grid (segments may overlap)."""
    shape = case.image.array.shape
    by_id = {node.node_id: node for node in case.nodes}
    pixels = np.zeros((*shape, len(node_ids)), dtype=bool)
    for index, node_id in enumerate(node_ids):
        node = by_id[node_id]
        k, j, i = node.offset
        dk, dj, di = node.mask.shape
        pixels[k:k + dk, j:j + dj, i:i + di, index] |= node.mask
    return pixels


def _segmentation(report: dict[str, Any], case: Case, sources: list[Any]) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    nodes = report["nodes"]
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=str(node["segment_name"])[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=codes.SCT.LymphNode,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,  # the annotator's outline, not the model's
        tracking_uid=_uid(report, f"track-{node['node_id']}"),
        tracking_id=f"node {node['node_id']}: LNM probability {node['probability']:.3f} (research use only)"[:64],
    ) for number, node in enumerate(nodes, start=1)]
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=_segment_pixels(case, [n["node_id"] for n in nodes]),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=_uid(report, "seg-series"), series_number=901, sop_instance_uid=_uid(report, "seg"),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="lnmstaging",
        software_versions=__version__, device_serial_number="0", series_description="LNMStaging nodes",
        content_description="Lymph nodes, LNMStaging probabilities (research use only)",
        omit_empty_frames=False,
    )


def _report(report: dict[str, Any], seg: Any, sources: list[Any]) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=f"{report['model']['name']} "
                                              f"{report['model']['version']}"[:64])
    source_series = hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)
    groups = []
    for number, node in enumerate(report["nodes"], start=1):
        description = seg.SegmentSequence[number - 1]
        tracking = hd.sr.TrackingIdentifier(uid=description.TrackingUID, identifier=description.TrackingID)
        measurements = [
            hd.sr.Measurement(name=codes.SCT.ShortAxis, value=float(node["short_axis_mm"]), unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(node["long_axis_mm"]), unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=hd.sr.CodedConcept(*PROBABILITY_CODE), value=float(node["probability"]),
                              unit=codes.UCUM.NoUnits, algorithm_id=algorithm),
        ]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=codes.SCT.LymphNode, measurements=measurements,
            referenced_segment=hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                                       segment_number=number, source_series=source_series),
        ))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(report, "device"), name="LNMStaging", manufacturer_name=MANUFACTURER, model_name="lnmstaging"))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.Imaging, imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=content, series_instance_uid=_uid(report, "sr-series"), series_number=902,
        sop_instance_uid=_uid(report, "sr"), instance_number=1, manufacturer=MANUFACTURER,
        series_description="LNMStaging node results (research use only)",
    )


def export_case(report_dir: str | Path, case: Case | None = None, split_islands: bool = False) -> dict[str, Any]:
    """Write ``report_dir``/dicom/seg.dcm and sr.dcm for a `predict` output folder whose image was a DICOM
    series; otherwise write nothing and say why.

    Args:
        report_dir: a `predict` output folder (holding report.json).
        case: the loaded case when the caller has it; else it is loaded from the report's input paths.
        split_islands: as given to `predict` (only used when the case is loaded here).

    Returns:
        ``{"written": True, "seg": path, "sr": path, "segments": n}`` or ``{"written": False, "reason": line}``.
    """
    import pydicom

    report_dir = Path(report_dir)
    report_file = report_dir / "report.json"
    if not report_file.is_file():
        raise InputError(report_dir, "holds no report.json: give a predict output folder")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    image = Path(report["input"]["image"])
    reason = why_not_exportable(image)
    if reason:
        return {"written": False, "reason": reason}
    if case is None:
        case = load_case(image, report["input"]["segmentation"], split_islands=split_islands)
    names = {node.node_id: node.segment_name for node in case.nodes}
    stale = [n["segment_name"] for n in report["nodes"] if names.get(n["node_id"]) != n["segment_name"]]
    if stale:
        raise InputError(report["input"]["segmentation"], f"no longer matches {report_file} (node {stale[0]!r}); "
                         "predict the case again")
    sources = [pydicom.dcmread(path) for path in series_files(image)]
    if len(sources) != case.image.array.shape[0]:
        raise InputError(image, f"has {len(sources)} instances for {case.image.array.shape[0]} slices: the export "
                         "needs one single-frame instance per slice")
    seg = _segmentation(report, case, sources)
    sr = _report(report, seg, sources)
    with atomic_directory(report_dir / DICOM_DIR, marker=SEG_FILE) as folder:
        seg.save_as(folder / SEG_FILE)
        sr.save_as(folder / SR_FILE)
    add_to_listing(Path(report_dir), Path(report_dir) / DICOM_DIR)  # the predict folder stays this tool's alone
    return {"written": True, "seg": f"{DICOM_DIR}/{SEG_FILE}", "sr": f"{DICOM_DIR}/{SR_FILE}",
            "segments": len(report["nodes"])}
