"""Renders the pictures of docs/slicer.md headless: the module's outputs on the phantom case, read back
from the MRML scene (slicer-core, no application) and drawn with matplotlib as Slicer's axial view shows
them (patient's right on the left, anterior up; the phantom's grid is axis-aligned LPS).

    .venv/bin/python LNMStaging/Testing/Python/LNMStagingDocImages.py docs/images [--model BUNDLE]
    .venv/bin/python LNMStaging/Testing/Python/LNMStagingDocImages.py /tmp/preview --stand-in

The model is the default bundle unless ``--model`` names one; the captions name the model used.
``--stand-in`` uses the scenarios' stand-in result instead of a model (a layout preview only: the numbers
are made up and the pictures say so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import slicer  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1], HERE.parents[2]):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import LNMStagingScenarios as scenarios  # noqa: E402
from LNMStagingSlicerLib.logic import LNMStagingLogic, PredictionRequest  # noqa: E402
from LNMStagingSlicerLib.scene_inputs import ExportedInputs  # noqa: E402
from LNMStagingSlicerLib.scene_outputs import (  # noqa: E402
    HEATMAP_FOREGROUND_OPACITY,
    PredictionOutputs,
    SceneOutputs,
    nodeTableColumns,
    probabilityColor,
)


def colormapOf(colorNode) -> ListedColormap:
    lookup = colorNode.GetScalarsToColors()
    low, high = lookup.GetRange()
    colors = [lookup.GetColor(low + (high - low) * t) for t in np.linspace(0.0, 1.0, 256)]
    return ListedColormap(colors)


def renderHeatmap(volumeNode, segmentationNode, nodes: list, outputs: PredictionOutputs, destination: Path, caption: str) -> None:
    volume = slicer.util.arrayFromVolume(volumeNode)
    heat = slicer.util.arrayFromVolume(outputs.heatmapNode)
    display = outputs.heatmapNode.GetDisplayNode()
    k = int(np.argmax(heat.reshape(heat.shape[0], -1).sum(axis=1)))  # the slice with the most attribution
    low, high = np.percentile(volume, [1, 99.5])
    figure, axis = plt.subplots(figsize=(6.4, 6.4), dpi=110)
    axis.imshow(volume[k], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    shown = np.ma.masked_less(heat[k], display.GetLowerThreshold())
    axis.imshow(shown, cmap=colormapOf(display.GetColorNode()), vmin=display.GetWindowLevelMin(),
                vmax=display.GetWindowLevelMax(), alpha=HEATMAP_FOREGROUND_OPACITY, interpolation="bilinear")
    segmentation = segmentationNode.GetSegmentation()
    probabilities = {row["node_id"]: row["probability"] for row in outputs.report["nodes"]}
    for region in nodes:
        mask = scenarios.fullMask(region, volume.shape)[k]
        if not mask.any() or region.node_id not in probabilities:
            continue
        nodeId = region.node_id
        color = segmentation.GetSegment(region.segment_id).GetColor()
        axis.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.6)
        rows, cols = np.nonzero(mask)
        axis.annotate(f"{probabilities[nodeId]:.2f}", (cols.max() + 3, rows.min()), color=color, fontsize=10, weight="bold")
    axis.set_title(caption, fontsize=10)
    axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(destination)
    plt.close(figure)


def renderNodes(outputs: PredictionOutputs, destination: Path, caption: str) -> None:
    columns = nodeTableColumns(outputs.report)
    wanted = ["Segment", "Probability", "Std", "Short axis (mm)", "Long axis (mm)", "Convexity", "Criteria"]
    data = {name: values for name, values in columns if name in wanted}
    cells = [[f"{value:.2f}" if isinstance(value, float) else str(value) for value in row]
             for row in zip(*(data[name] for name in wanted), strict=True)]
    best = max(outputs.report["nodes"], key=lambda row: row["probability"])
    sequence = outputs.sequenceNodes[best["node_id"]]
    frames = np.asarray([slicer.util.arrayFromVolume(sequence.GetNthDataNode(n))[0] for n in range(sequence.GetNumberOfDataNodes())])
    figure = plt.figure(figsize=(12.0, 2.0 + 0.3 * len(cells)), dpi=100)
    tableAxis = figure.add_axes([0.01, 0.42, 0.98, 0.5])
    tableAxis.set_axis_off()
    widths = [0.17, 0.09, 0.06, 0.1, 0.1, 0.08, 0.4]
    table = tableAxis.table(cellText=cells, colLabels=wanted, loc="center", cellLoc="left", colWidths=widths)
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (row, _), cell in table.get_celld().items():
        if row > 0:
            cell.set_facecolor((*probabilityColor(float(cells[row - 1][1])), 0.25))
    count = len(frames)
    for index, frame in enumerate(frames):
        axis = figure.add_axes([0.01 + index * 0.98 / count, 0.02, 0.98 / count - 0.005, 0.34])
        axis.imshow(frame, cmap="gray", interpolation="nearest")
        axis.set_axis_off()
    figure.suptitle(f"{caption}\nGrowth traversal of '{best['segment_name']}' (frames left to right).", fontsize=9)
    figure.savefig(destination)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--model", help="model bundle folder (default: the default bundle)")
    parser.add_argument("--stand-in", action="store_true", help="use the made-up stand-in result (layout preview)")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    context = scenarios.makeHeadlessScene()
    with tempfile.TemporaryDirectory() as folder:
        files = scenarios.writeTestCase(Path(folder) / "case")
        volumeNode = scenarios.loadVolume(context.scene, files.image, "phantom")
        segmentationNode = scenarios.loadSegmentation(context.scene, files.segnrrd, "phantom nodes")
        exported: ExportedInputs = scenarios.exportTo(Path(folder) / "export", volumeNode, segmentationNode)
        nodes = scenarios.libraryNodes(exported)
        if args.stand_in:
            scenarios.writeStandInOutputs(exported, Path(folder) / "stand-in")
            outputs = SceneOutputs(volumeNode, segmentationNode).load(Path(folder) / "stand-in", exported)
            caption = "STAND-IN RESULT (layout preview, made-up numbers)."
        else:
            outputs = LNMStagingLogic().predict(volumeNode, segmentationNode,
                                                PredictionRequest(modelPath=args.model, python=sys.executable))
            model = outputs.report["model"]
            caption = f"Synthetic phantom, model {model['name']} {model['version']}."
        renderHeatmap(volumeNode, segmentationNode, nodes, outputs, args.outdir / "slicer-heatmap.png",
                      caption + "\nNode heatmap (integrated gradients, inside each node) over T2, nodes coloured by probability.")
        renderNodes(outputs, args.outdir / "slicer-nodes.png", caption)
    print(f"wrote {args.outdir / 'slicer-heatmap.png'} and {args.outdir / 'slicer-nodes.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
