"""``report.html``: one self-contained page (images inlined as data URIs, no external resource)."""

from __future__ import annotations

import html
from typing import Any

from .imaging import data_uri, overlay, png_data_uri, strip, to_uint8, top_fraction
from .results import DISCLAIMER, UNCERTAIN_RANGE, PredictionResult

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}
.disclaimer{background:#fff3cd;border:1px solid #e0b84c;padding:10px 14px;border-radius:4px}
.result{font-size:1.1em;padding:10px 14px;border-radius:4px;border:1px solid #bbb;background:#f6f6f6}
.uncertain{color:#a15c00;font-weight:bold}
table{border-collapse:collapse;font-size:0.82em;display:block;max-width:100%;overflow-x:auto}td,th{border:1px solid #ccc;padding:3px 5px;text-align:right}
th{background:#eee}td.name{text-align:left}.yes{color:#b00020;font-weight:bold}.no{color:#555}.plain{color:#222}
.node{margin:14px 0;padding:10px;border:1px solid #ddd;border-radius:4px}
.node img{image-rendering:pixelated;margin-right:10px;vertical-align:top}
figure{display:inline-block;margin:4px 12px 4px 0}figcaption{font-size:0.8em;color:#555}
pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:0.85em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _flag(value: bool) -> str:
    """A criterion's answer: "yes" marks a suspicious finding (red)."""
    return '<span class="yes">yes</span>' if value else '<span class="no">no</span>'


def _plain(value: bool) -> str:
    """A yes/no that is not a finding (e.g. "in patient bag"): never coloured like one."""
    return f'<span class="plain">{"yes" if value else "no"}</span>'


def _input_warnings(result: PredictionResult) -> str:
    """The input warnings (out of domain, unknown domain, clipped clinical values), right under the probability."""
    return "".join(f'<p class="uncertain">Warning: {_e(warning)}.</p>\n' for warning in result.input_warnings)


def _patient_section(result: PredictionResult) -> str:
    patient = result.patient
    low, high = UNCERTAIN_RANGE
    uncertain = (f'<p class="uncertain">Uncertain: {_e("; ".join(patient.uncertainty_reasons))}. '
                 "Expert review is recommended (Keel et al. 2025, section 4.4).</p>") if patient.uncertain else \
        f"<p>Not flagged as uncertain (probability outside {low}-{high} and the ensemble agrees).</p>"
    clinical = patient.clinical
    caveats = "".join(f'<br><span class="uncertain">Caution: {_e(c)}.</span>' for c in patient.input_caveats)
    return f"""<h2>Patient</h2>
<div class="result">Probability of lymph node metastasis: <b>{patient.probability:.3f}</b>
(ensemble SD {patient.std:.3f}, {len(patient.per_member)} members) &mdash; decision at the model's threshold
{patient.threshold:.3f}: <b>{_e(patient.decision)}</b>{caveats}</div>
{_input_warnings(result)}{uncertain}
<p>Clinical data: {_e(clinical.note)}.</p>"""


def _node_table(result: PredictionResult) -> str:
    rows = []
    for node in result.nodes:
        esgar = node.criteria["esgar"]
        rows.append(
            f"<tr><td>{node.node_id}</td><td class='name'>{_e(node.segment_name)}</td>"
            f"<td>{node.probability:.3f} &plusmn; {node.std:.3f}</td><td>{node.short_axis_mm:.1f}</td>"
            f"<td>{node.long_axis_mm:.1f}</td><td>{node.axis_ratio:.2f}</td><td>{node.convexity:.3f}</td>"
            f"<td>{node.compactness:.3f}</td><td>{node.heterogeneity_cv:.3f}</td>"
            f"<td>{_flag(esgar['round'])}</td><td>{_flag(esgar['irregular_border'])}</td>"
            f"<td>{_flag(esgar['heterogeneous'])}</td><td>{_flag(esgar['suspicious'])}</td>"
            f"<td>{_flag(node.criteria['lateral_short_axis_7mm'])}</td><td>{_plain(node.in_patient_bag)}</td></tr>"
        )
    skipped = "".join(f"<li>{_e(s['segment_name'])}: {_e(s['reason'])}</li>" for s in result.skipped_nodes)
    left_out = "".join(f"<li>node {s['node_id']} ({_e(s['segment_name'])}): {_e(s['reason'])}</li>"
                       for s in result.patient.nodes_left_out_of_bag)
    return f"""<h2>Nodes</h2>
<table><tr><th>id</th><th>segment</th><th>probability &plusmn; SD</th><th>short axis mm</th><th>long axis mm</th>
<th>ratio</th><th>convexity</th><th>compactness</th><th>intensity CV</th><th>round</th><th>irregular border</th>
<th>heterogeneous</th><th>ESGAR suspicious</th><th>lateral &ge; 7 mm</th><th>in patient bag</th></tr>
{''.join(rows)}</table>
{'<p>No prediction for:</p><ul>' + skipped + '</ul>' if skipped else ''}
{'<p>Not in the patient bag (the patient probability does not use them):</p><ul>' + left_out + '</ul>'
 if left_out else ''}"""


FIGURE_SCALE = 4  # display pixels per patch pixel of the patch and heatmap figures


def _figure_size(shape: tuple[int, ...]) -> str:
    """The ``width``/``height`` attributes that show a (rows, columns) figure ``FIGURE_SCALE`` times larger."""
    return f'width="{shape[1] * FIGURE_SCALE}" height="{shape[0] * FIGURE_SCALE}"'


def _node_panels(result: PredictionResult, strip_pngs: dict[tuple[int, str], bytes]) -> str:
    steps = ", ".join(f"{t:+g}" for t in result.traversal_steps)
    panels = []
    for node in result.nodes:
        patch = result.node_patches[node.node_id]
        heat = result.patch_heatmaps[node.node_id]
        # encoded at the patch's own resolution and shown FIGURE_SCALE times larger (pixelated, see _STYLE): the
        # same picture as an upscaled PNG, for a 16th of the pixels to encode (300 figures at 100 nodes)
        size = _figure_size(patch.image.shape)
        figures = [
            f'<figure><img alt="patch" {size} src="{data_uri(to_uint8(patch.image))}"><figcaption>patch '
            f"(slice {patch.slice_index}, {patch.pixel_mm:.2f} mm/pixel)</figcaption></figure>",
            f'<figure><img alt="node heatmap" {size} src="{data_uri(overlay(patch.image, heat, patch.mask, scale=1))}">'
            f"<figcaption>node heatmap: integrated gradients of the patch score (node outline in cyan; "
            f"{100 * node.gradcam_in_node_fraction:.0f} % of it inside)"
            "</figcaption></figure>",
            f'<figure><img alt="node heatmap top 25 %" {size} '
            f'src="{data_uri(overlay(patch.image, top_fraction(heat), patch.mask, scale=1))}">'
            "<figcaption>top 25 % (as displayed in the paper)</figcaption></figure>",
        ]
        probabilities = node.traversal_probabilities
        strips = "".join(
            f'<figure><img alt="{_e(name)}" src="{_strip_uri(strip_pngs, node.node_id, name, frames)}"><figcaption>'
            f'{_e(name.replace("_", " "))} '
            f"traversal, t = {steps}"
            + (f"<br>probability of each frame (primary member, this patch; the node's own at +0): {', '.join(f'{p:.2f}' for p in probabilities[name])}"
               if name in probabilities else "")
            + "</figcaption></figure><br>"
            for name, frames in result.traversals[node.node_id].items()
        )
        panels.append(f"""<div class="node"><b>Node {node.node_id}: {_e(node.segment_name)}</b> &mdash;
probability {node.probability:.3f} &plusmn; {node.std:.3f}; ESGAR: {_e(node.criteria['esgar']['rule'])}
({'suspicious' if node.criteria['esgar']['suspicious'] else 'not suspicious'})<br>{''.join(figures)}<br>{strips}</div>""")
    return "<h2>Node explanations</h2>" + "".join(panels)


def _criteria_section(result: PredictionResult) -> str:
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in result.criteria_definitions.items() if k != "cutoffs")
    return f"<h2>Radiological criteria</h2><ul>{items}</ul>"


def _card_value(value: Any, key: str = "") -> str:
    """A model-card value as a reader sees it: text, a list, or a two-column table (nested values inside);
    a number pair is "mean ± SD" under a ``*_mean_sd`` key, else an interval."""
    if isinstance(value, dict):
        rows = "".join(f"<tr><th class='name'>{_e(str(k).replace('_', ' '))}</th>"
                       f"<td class='name'>{_card_value(v, str(k))}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list | tuple):
        if len(value) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return _e(f"{value[0]:.3f} ± {value[1]:.3f}" if key.endswith("mean_sd") else
                      f"[{value[0]:.3f}, {value[1]:.3f}]")
        return "<ul>" + "".join(f"<li>{_card_value(v)}</li>" for v in value) + "</ul>"
    if isinstance(value, float):
        return _e(f"{value:.3f}")
    return _e(value)


def _model_section(result: PredictionResult) -> str:
    model = result.model
    # Training data and intended use always, first ("not stated in the model card" when the card lacks them).
    entries = [("training data", model.model_data), ("intended use", model.intended_use)]
    entries += [(k.replace("_", " "), v) for k, v in model.card_summary.items() if k not in ("data", "intended_use")]
    card = "".join(f"<li><b>{_e(label)}</b>: {_card_value(value)}</li>" for label, value in entries)
    return f"""<h2>Model</h2>
<p>{_e(model.name)} {_e(model.version)} (manifest SHA-256 <code>{_e(model.manifest_sha256)}</code>),
preset {_e(model.preset)}, {model.n_members} ensemble members, threshold {model.threshold:.3f}
({_e(model.threshold_source)}), eta {model.eta:.2f}.</p><ul>{card}</ul>"""


def _strip_uri(strip_pngs: dict[tuple[int, str], bytes], node_id: int, name: str, frames) -> str:
    """The traversal strip as a data URI: the PNG the writer already encoded when it has one."""
    encoded = strip_pngs.get((node_id, name))
    return png_data_uri(encoded) if encoded is not None else data_uri(strip(frames))


def render_html(result: PredictionResult, strip_pngs: dict[tuple[int, str], bytes] | None = None) -> str:
    """The self-contained HTML report.

    Args:
        result: the prediction.
        strip_pngs: the traversal strips already PNG-encoded, by (node id, direction), so that they are not
            encoded twice (missing ones are encoded here).

    Returns:
        The HTML text.
    """
    lead, _, rest = DISCLAIMER.partition(". ")
    disclaimer = f'<p class="disclaimer"><b>{_e(lead)}.</b> {_e(rest)}</p>'
    source = result.input_info
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LNMStaging report</title><style>{_STYLE}</style></head>
<body>
<h1>Lymph node metastasis staging &mdash; research report</h1>
{disclaimer}
<p>Image: <code>{_e(source.get('image'))}</code><br>Segmentation: <code>{_e(source.get('segmentation'))}</code></p>
{_patient_section(result)}
{_node_table(result)}
{_node_panels(result, strip_pngs or {})}
{_criteria_section(result)}
{_model_section(result)}
{disclaimer}
</body></html>
"""
