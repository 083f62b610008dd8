"""Reading a survival table: the analysed columns checked, missing values excluded and counted, and the
Cox design (numeric columns as they are, categorical ones as one indicator per level against a reference).

The table is any CSV (e.g. the ``predict-cohort`` summary joined with follow-up). Missing cells are the
words of :data:`LNMStagingLib.io.cohort.MISSING_WORDS`; a row missing any analysed column is left out of every
figure, and the exclusions are counted per column so the report can say what was left out and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.cohort import MISSING_WORDS

EVENT_WORDS = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "event": 1, "censored": 0}


@dataclass
class SurvivalTable:
    """The complete-case rows of the analysed columns.

    ``time``/``event``/``group``: one value per kept row; ``covariates``: column -> values (float for a
    numeric column, str for a categorical one); ``levels``: categorical column -> its levels, reference first.
    """

    source: Path
    time_column: str
    event_column: str
    group_column: str
    covariate_columns: list[str]
    time: list[float]
    event: list[int]
    group: list[str]
    covariates: dict[str, list[float | str]]
    levels: dict[str, list[str]]
    rows_read: int
    excluded_by_column: dict[str, int] = field(default_factory=dict)  # rows lacking that column's value
    # the group is a Cox term like any covariate: a number (e.g. 0/1) when its values are numbers
    group_categorical: bool = False

    @property
    def n(self) -> int:
        return len(self.time)

    @property
    def excluded(self) -> int:
        return self.rows_read - self.n

    def group_levels(self) -> list[str]:
        return self.levels[self.group_column]

    def term_names(self, column: str) -> list[str]:
        """Cox terms of one column: itself when numeric, ``column[level]`` per non-reference level otherwise."""
        if column in self.categorical:
            return [f"{column}[{level}]" for level in self.levels[column][1:]]
        return [column]

    @property
    def categorical(self) -> set[str]:
        return {name for name in self.levels if name != self.group_column or self.group_categorical}

    def design(self, columns: list[str]) -> dict[str, list[float]]:
        """Cox design matrix (term -> values) of ``columns``, with duration ``__time`` and event ``__event``."""
        matrix: dict[str, list[float]] = {"__time": list(self.time), "__event": [float(e) for e in self.event]}
        for column in columns:
            values = self.group if column == self.group_column else self.covariates[column]
            if column in self.categorical:
                for level, term in zip(self.levels[column][1:], self.term_names(column), strict=True):
                    matrix[term] = [1.0 if value == level else 0.0 for value in values]
            else:
                matrix[column] = [float(value) for value in values]
        return matrix


def _missing(value: str | None) -> bool:
    return value is None or value.strip().lower() in MISSING_WORDS


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _sorted_levels(values: list[str]) -> list[str]:
    """Levels in numeric order when every level is a number, else in text order (deterministic)."""
    unique = set(values)
    if all(_number(v) is not None for v in unique):
        return sorted(unique, key=lambda v: (_number(v), v))
    return sorted(unique)


def _canonical(text: str) -> str:
    """'1.0' and '1' are one group level: numbers are written in their shortest form."""
    number = _number(text)
    return f"{number:g}" if number is not None else text


def read_survival_table(path: str | Path, time: str, event: str, group: str, covariates: list[str] | None = None,
                        categorical: list[str] | None = None, reference: dict[str, str] | None = None) -> SurvivalTable:
    """Read and check ``path``: unknown column, non-numeric or negative time, an event that is not 0/1, a
    numeric covariate with text, no events or fewer than two groups raise InputError naming the file.

    Args:
        path: the CSV file.
        time, event, group: column names (follow-up time, 1 = event / 0 = censored, the compared groups).
        covariates: further Cox covariates.
        categorical: columns to treat as categorical even when their values are numbers.
        reference: column -> its reference level (default: the first level in sorted order).

    Returns:
        The complete-case :class:`SurvivalTable`.
    """
    import csv

    path = Path(path)
    covariates = list(dict.fromkeys(covariates or []))
    categorical = set(categorical or [])
    reference = dict(reference or {})
    if not path.is_file():
        raise InputError(path, "table not found")
    if group in covariates:
        raise InputError(None, f"--group {group} is in the model already; do not list it in --covariates")
    wanted = [time, event, group, *covariates]
    if len(set(wanted[:3])) < 3:
        raise InputError(None, "--time, --event and --group must name three different columns")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            unknown = [name for name in [*wanted, *categorical, *reference] if name not in header]
            if unknown:
                raise InputError(path, f"has no column {unknown[0]!r} (columns: {', '.join(header) or 'none'})")
            raw = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError:
        raise InputError(path, "is not a UTF-8 text CSV file") from None
    except csv.Error as error:
        raise InputError(path, f"is not a readable CSV file ({error})") from None
    if not raw:
        raise InputError(path, "has no data rows")

    excluded = {name: 0 for name in wanted}
    kept: list[dict[str, str]] = []
    lines: list[int] = []  # the file line of each kept row (the header is line 1)
    for line, row in enumerate(raw, start=2):
        absent = [name for name in wanted if _missing(row.get(name))]
        for name in absent:
            excluded[name] += 1
        if not absent:
            kept.append(row)
            lines.append(line)
    if not kept:
        raise InputError(path, "no row has every analysed column filled in")

    times, events = [], []
    for line, row in zip(lines, kept, strict=True):
        value = _number(row[time])
        if value is None:
            raise InputError(path, f"line {line}: time column {time!r} has a non-numeric value {row[time]!r}")
        if value < 0:
            raise InputError(path, f"line {line}: time column {time!r} has a negative value {row[time]!r}")
        flag = EVENT_WORDS.get(row[event].lower())
        if flag is None and _number(row[event]) in (0.0, 1.0):
            flag = int(_number(row[event]))
        if flag is None:
            raise InputError(path, f"line {line}: event column {event!r} must be 1 (event) or 0 (censored), not {row[event]!r}")
        times.append(value)
        events.append(flag)
    if not any(events):
        raise InputError(path, f"event column {event!r} has no event among the {len(kept)} complete rows")

    values: dict[str, list[float | str]] = {}
    levels: dict[str, list[str]] = {}
    for name in [group, *covariates]:
        column = [_canonical(row[name]) for row in kept]
        numeric = all(_number(v) is not None for v in column)
        if name == group or name in categorical or not numeric:
            levels[name] = _sorted_levels(column)
            if name in reference:
                if reference[name] not in levels[name]:
                    raise InputError(path, f"column {name!r} has no level {reference[name]!r} (levels: {', '.join(levels[name])})")
                levels[name].remove(reference[name])
                levels[name].insert(0, reference[name])
            if len(levels[name]) < 2:
                raise InputError(path, f"column {name!r} has a single value {levels[name][0]!r} among the complete rows")
            values[name] = column
        else:
            values[name] = [float(_number(v)) for v in column]
    group_values = [str(v) for v in values.pop(group)]
    group_categorical = group in categorical or not all(_number(v) is not None for v in group_values)
    return SurvivalTable(path, time, event, group, covariates, times, events, group_values, values, levels,
                         len(raw), excluded, group_categorical)
