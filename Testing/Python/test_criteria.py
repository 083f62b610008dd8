"""Rule-based criteria (ESGAR 2016, lateral 7 mm) on constructed measurements and on the phantom's nodes."""

from __future__ import annotations

import pytest

from LNMStagingLib.imaging import criteria
from LNMStagingLib.imaging.case import load_case, prepare_case
from LNMStagingLib.imaging.measure import NodeMeasurement, measure_nodes


def _measurement(short, ratio=0.6, convexity=1.0, compactness=1.05):
    return NodeMeasurement(1, "n", short, short / ratio, ratio, convexity, compactness, 100.0, 2, 0, 0, 0, 0, 30.0)


@pytest.mark.parametrize(
    "short, ratio, convexity, compactness, cv, suspicious",
    [
        (9.0, 0.5, 1.0, 1.0, 0.0, True),  # size alone, at the cut-off
        (8.9, 0.5, 1.0, 1.0, 0.0, False),  # 5-9 mm, no feature
        (6.0, 0.85, 1.0, 1.0, 0.0, False),  # 5-9 mm, round only
        (6.0, 0.85, 0.90, 1.0, 0.0, True),  # round + irregular (convexity)
        (6.0, 0.5, 1.0, 1.3, 0.2, True),  # irregular (compactness) + heterogeneous
        (5.0, 0.5, 1.0, 1.0, 0.2, False),  # 5 mm belongs to the 5-9 band: one feature
        (4.9, 0.85, 0.9, 1.0, 0.0, False),  # < 5 mm: two features are not enough
        (4.9, 0.85, 0.9, 1.0, 0.2, True),  # < 5 mm: all three
    ],
)
def test_esgar_rule(short, ratio, convexity, compactness, cv, suspicious):
    result = criteria.evaluate(_measurement(short, ratio, convexity, compactness), cv)
    assert result["esgar"]["suspicious"] is suspicious
    assert set(result["esgar"]) >= {"suspicious", "round", "irregular_border", "heterogeneous", "rule"}
    assert result["lateral_short_axis_7mm"] is (short >= 7.0)


def test_phantom_nodes_come_out_as_expected(phantom_files):
    case = load_case(phantom_files.image, phantom_files.segmentation)
    native = prepare_case(case, None, intensity=False)
    results = {}
    for measurement, node in zip(measure_nodes(native), native.nodes, strict=True):
        cv = criteria.heterogeneity_cv(native.image, node)
        results[node.segment_name] = (cv, criteria.evaluate(measurement, cv))
    flags = {name: r["esgar"] for name, (_, r) in results.items()}
    # border and texture features: only the lobulated node is irregular, only the textured one heterogeneous
    assert [n for n, f in flags.items() if f["irregular_border"]] == ["Node lobulated"]
    assert [n for n, f in flags.items() if f["heterogeneous"]] == ["Node heterogeneous"]
    assert results["Node heterogeneous"][0] > 0.15 > max(cv for n, (cv, _) in results.items() if n != "Node heterogeneous")
    # ESGAR: the 10 mm node is suspicious on size, the heterogeneous one (9.0 mm true short axis, round) on two
    # features, the smaller ones have at most one feature. The lobulated node (true short axis 8.5 mm, axis
    # ratio 0.80 at the round cut-off, irregular) is a borderline call either way and is left out
    called = {n for n, f in flags.items() if f["suspicious"]} - {"Node lobulated"}
    assert called == {"Node 10 mm round", "Node heterogeneous"}
    assert not flags["Node 8 mm oblique"]["round"] and flags["Node 10 mm round"]["round"]
    lateral = {n for n, (_, r) in results.items() if r["lateral_short_axis_7mm"]}
    assert "Lateral node" in lateral and "Node 6 mm oval" not in lateral and "Node small round" not in lateral


def test_definitions_state_every_cutoff():
    text = criteria.definitions()
    for key in ("esgar", "round", "irregular_border", "heterogeneous", "lateral_short_axis_7mm", "cutoffs"):
        assert key in text
    assert "0.8" in text["round"] and "0.95" in text["irregular_border"] and "1.25" in text["irregular_border"]
