"""Prediction with explanations for one segmented case: per-node and patient probabilities, node heatmaps
(integrated gradients inside the node) in image space, latent growth/border/classifier traversals, radiological
criteria, JSON/HTML reports, and the latent-space cluster analysis. Research use only."""

from . import (
    clusters,
    gradcam,
    imaging,
    inputs,
    pipeline,
    report_html,
    results,
    stages,
    traversal,
    writers,
)
from .inputs import check_intended_input, image_modality, load_bundle_for_case
from .pipeline import predict_case
from .results import NodePatch, NodePrediction, PatientResult, PredictionResult
from .writers import write_outputs

__all__ = [
    "clusters", "gradcam", "imaging", "inputs", "pipeline", "report_html", "results", "stages",
    "traversal", "writers",
    "NodePatch",
    "NodePrediction",
    "PatientResult",
    "PredictionResult",
    "check_intended_input",
    "image_modality",
    "load_bundle_for_case",
    "predict_case",
    "write_outputs",
]
