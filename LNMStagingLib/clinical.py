"""The one clinical encoder: a patient's :class:`~LNMStagingLib.io.cohort.ClinicalData` -> the numbers the models
see, used by training on a cohort and by prediction alike, so the two cannot encode differently.

Age in years, sex 0 (female) / 1 (male), T stage 1-4; None = missing (the models then receive a neutral
value plus a missingness indicator, see :class:`~LNMStagingLib.models.mil.ClinicalSpec`).
"""

from __future__ import annotations

from typing import Any

CLINICAL_NAMES: tuple[str, ...] = ("age", "sex", "t_stage")
_SEX = {"F": 0.0, "M": 1.0}


def encode_clinical(clinical: Any, names: tuple[str, ...] | list[str] = CLINICAL_NAMES) -> dict[str, float | None]:
    """Model inputs of a patient's clinical data.

    Args:
        clinical: a ``ClinicalData`` (or None: everything missing).
        names: the inputs wanted (a model's declared clinical inputs); a name the data do not hold is missing.

    Returns:
        ``{name: value or None}`` for every name.
    """
    out: dict[str, float | None] = {}
    for name in names:
        value = getattr(clinical, name, None) if clinical is not None else None
        if value is None:
            out[name] = None
        elif name == "sex":
            out[name] = _SEX.get(value)
        elif name == "t_stage":
            out[name] = float(str(value)[1])
        else:
            out[name] = float(value)
    return out
