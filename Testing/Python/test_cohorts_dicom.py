"""DICOM exports: the phantom written as a real CT DICOM series (pydicom), predicted, exported as DICOM SEG and
SR TID 1500, and read back with highdicom: masks, probabilities and axes equal report.json; no DICOM input
gives one line saying why."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from LNMStagingLib.cli.main import main
from LNMStagingLib.export.dicom import PROBABILITY_CODE
from LNMStagingLib.imaging.case import load_case


def write_ct_series(image: sitk.Image, folder: Path) -> Path:
    """One single-frame CT instance per slice, one study, series and frame of reference (what a scanner writes;
    CT because the tiny test bundle, like the bundled default, is made for CT)."""
    folder.mkdir(parents=True)
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    spacing, direction = image.GetSpacing(), image.GetDirection()
    study, series, frame = (generate_uid(entropy_srcs=["lnmstaging-test", name]) for name in ("study", "series", "frame"))
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series, str(k)])
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Pelvis", "PHANTOM1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "20260101", "120000", "", "1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 1, k + 1, "synthetic"
        ds.ImagePositionPatient = [f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [f"{direction[a]:g}" for a in (0, 3, 6, 1, 4, 7)]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = array.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = array[k].tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def dicom_prediction(phantom_files, tiny_bundle_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom")
    series = write_ct_series(sitk.ReadImage(str(phantom_files.image)), folder / "series")
    out = folder / "prediction"
    assert main(["predict", str(series), str(phantom_files.segmentation), "--model", str(tiny_bundle_dir), "--quiet",
                 "--out", str(out)]) == 0
    assert main(["export-dicom", str(out)]) == 0
    return series, out, json.loads((out / "report.json").read_text())


def test_seg_round_trip(dicom_prediction, phantom_files):
    series, out, report = dicom_prediction
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    source = pydicom.dcmread(next(series.glob("*.dcm")))
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == "PHANTOM1"
    assert seg.number_of_segments == len(report["nodes"]) > 1
    case = load_case(series, phantom_files.segmentation)
    order = [Path(p).name for p in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))]
    uids = [pydicom.dcmread(series / name).SOPInstanceUID for name in order]  # slice k = instance k
    for number, node in enumerate(report["nodes"], start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == node["segment_name"]
        assert f"LNM probability {node['probability']:.3f}" in description.tracking_id
        mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[number], assert_missing_frames_are_empty=True)[..., 0]
        region = next(n for n in case.nodes if n.node_id == node["node_id"])
        expected = np.zeros(case.image.array.shape, dtype=bool)
        k, j, i = region.offset
        expected[k:k + region.mask.shape[0], j:j + region.mask.shape[1], i:i + region.mask.shape[2]] = region.mask
        np.testing.assert_array_equal(mask.astype(bool), expected)


def test_sr_round_trip(dicom_prediction):
    series, out, report = dicom_prediction
    sr = hd.sr.srread(out / "dicom" / "sr.dcm")
    seg = pydicom.dcmread(out / "dicom" / "seg.dcm")
    assert sr.SeriesInstanceUID != seg.SeriesInstanceUID and sr.StudyInstanceUID == seg.StudyInstanceUID
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(report["nodes"])
    probability = hd.sr.CodedConcept(*PROBABILITY_CODE)
    source_series = pydicom.dcmread(next(series.glob("*.dcm"))).SeriesInstanceUID
    for group, node in zip(groups, report["nodes"], strict=True):
        values = {name: group.get_measurements(name=code)[0].value for name, code in (
            ("short_axis_mm", codes.SCT.ShortAxis), ("long_axis_mm", codes.SCT.LongAxis), ("probability", probability))}
        assert values == pytest.approx({key: node[key] for key in values}, rel=1e-6)
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.referenced_segment_numbers[0] == report["nodes"].index(node) + 1
        assert segment.source_series_for_segmentation.value == source_series


def test_no_dicom_input_says_why(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    out = tmp_path / "prediction"
    assert main(["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model", str(tiny_bundle_dir),
                 "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["export-dicom", str(out)]) == 1
    said = capsys.readouterr().out.strip()
    assert len(said.splitlines()) == 1 and "not a DICOM series" in said and not (out / "dicom").exists()


def test_predict_cohort_dicom_export(dicom_prediction, phantom_files, tiny_bundle_dir, tmp_path, capsys):
    series, _, _ = dicom_prediction
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("patient_id,image,segmentation\n"
                        f"dicom,{series},{phantom_files.segmentation}\nnrrd,{phantom_files.image},{phantom_files.segmentation}\n")
    out = tmp_path / "run"
    assert main(["predict-cohort", str(manifest), "--model", str(tiny_bundle_dir), "--dicom-export", "--quiet",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "1 case(s) written" in said and "nrrd: no DICOM export" in said
    assert (out / "cases" / "dicom" / "dicom" / "seg.dcm").is_file() and (out / "cases" / "dicom" / "dicom" / "sr.dcm").is_file()
    assert not (out / "cases" / "nrrd" / "dicom").exists()
    rows = (out / "summary.csv").read_text()
    assert "not a DICOM series" in rows and ",written," in rows
