"""README reference sections generated from the code: the settings model and the metrics registries.

``python -m stream_al.docs`` rewrites the generated parts of README.md (between
``<!-- configure:start -->``/``<!-- configure:end -->`` and ``<!-- metrics:start -->``/
``<!-- metrics:end -->``); ``--check`` only reports whether they are stale (a unit test does the same).

>>> rows = {row.path: row for row in settings_rows()}
>>> rows["kafka.sasl_password"].secret, rows["budget.boost.allowance"].default
(True, '"50 per day"')
>>> [m.name for m in metric_rows() if m.name.endswith("events_total")]
['stream_al_events_total']
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stream_al.config import Settings

ENV_PREFIX = "STREAM_AL_"
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class SettingRow:
    path: str  # dotted, e.g. "budget.boost.allowance"
    type: str
    default: str
    description: str
    secret: bool
    section: bool  # a nested model: its fields follow as their own rows

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.path.upper().replace(".", "__")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``Model`` or ``Model | None``, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" \\| null" if type(None) in args else "")
    if origin in (tuple, list, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}" if args else "map"
    if annotation is typing.Any:
        return "any"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = ((Ge, "≥", "ge"), (Gt, ">", "gt"), (Le, "≤", "le"), (Lt, "<", "lt"), (MinLen, "min length", "min_length"),
           (MaxLen, "max length", "max_length"))


def _constraints(field: FieldInfo) -> str:
    found = []
    for item in field.metadata:
        for kind, sign, attr in _BOUNDS:
            if isinstance(item, kind):
                found.append(f"{sign} {getattr(item, attr)}")
    return f" ({', '.join(found)})" if found else ""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "*required*"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


def _first_line(doc: str | None) -> str:
    """The first paragraph of a docstring, reST roles and double backticks made Markdown."""
    text = (doc or "").strip().split("\n\n")[0].replace("\n", " ").strip()
    return re.sub(r":[a-z]+:`([^`]*)`", r"`\1`", text).replace("``", "`")


def _walk(model: type[BaseModel], prefix: str) -> Iterator[SettingRow]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        sub = _model_of(annotation)
        if sub is not None:
            description = field.description or _first_line(sub.__doc__)
            optional = " \\| null" if sub is not annotation else ""
            yield SettingRow(path, "section" + optional, _default(field), description, False, True)
            yield from _walk(sub, path + ".")
        else:
            yield SettingRow(path, _type_name(annotation) + _constraints(field), _default(field),
                             field.description or "", _is_secret(annotation), False)


def settings_rows() -> list[SettingRow]:
    """Every setting of :class:`Settings`, nested sections flattened to dotted paths, in model order."""
    return list(_walk(Settings, ""))


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def render_configure() -> str:
    lines = [
        "| setting | type | default | description |",
        "|---|---|---|---|",
    ]
    for row in settings_rows():
        name = f"**`{row.path}`**" if row.section else f"`{row.path}`"
        description = _cell(row.description)
        if row.secret:
            description = ("**secret** (masked in logs and `stream-al config`; set it through "
                           f"`{row.env}`)" + (f"; {description}" if description else ""))
        default = f"`{row.default}`" if row.default and not row.default.startswith("*") else row.default
        lines.append(f"| {name} | {row.type} | {default} | {description} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class MetricRow:
    name: str  # as exported: counters end in _total; histograms also export _bucket, _sum, _count
    type: str
    labels: tuple[str, ...]
    help: str
    app: str  # "engine" or "review"
    buckets: tuple[float, ...] = ()

    @property
    def series(self) -> set[str]:
        """The sample names a scrape shows for this metric (``_created`` aside)."""
        if self.type == "histogram":
            return {self.name, f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def _registries() -> list[tuple[str, Any]]:
    from stream_al.metrics import Metrics
    from stream_al.review.metrics import ReviewMetrics

    return [("engine", Metrics().registry), ("review", ReviewMetrics().registry)]


def metric_rows() -> list[MetricRow]:
    """Every metric the engine (:class:`stream_al.metrics.Metrics`) and the review app
    (:class:`stream_al.review.metrics.ReviewMetrics`) register, in registration order."""
    rows = []
    for app, registry in _registries():
        for collector in list(registry._collector_to_names):
            kind = collector._type
            name = collector._name + ("_total" if kind == "counter" else "")
            bounds = tuple(b for b in getattr(collector, "_upper_bounds", ()) if b != float("inf"))
            rows.append(MetricRow(name, kind, tuple(collector._labelnames), collector._documentation, app, bounds))
    return rows


def exported_series() -> set[str]:
    return set().union(*(row.series for row in metric_rows()))


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g} {unit}"
    return f"{value:g} s"


def render_metrics() -> str:
    lines = [
        "| metric | type | labels | app | help |",
        "|---|---|---|---|---|",
    ]
    for row in metric_rows():
        labels = ", ".join(f"`{label}`" for label in row.labels)
        help_text = _cell(row.help)
        if row.buckets:
            help_text += f" Buckets {_seconds(row.buckets[0])} to {_seconds(row.buckets[-1])}."
        lines.append(f"| `{row.name}` | {row.type} | {labels} | {row.app} | {help_text} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# README


SECTIONS = {"configure": render_configure, "metrics": render_metrics}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def generated(text: str, name: str) -> str:
    """What stands between the markers of section ``name`` in ``text``."""
    start, end = _markers(name)
    match = re.search(re.escape(start) + r"\n(.*?)" + re.escape(end), text, re.DOTALL)
    if match is None:
        raise ValueError(f"README has no {start} ... {end} block")
    return match.group(1)


def update(text: str) -> str:
    """``text`` with every generated section rendered afresh."""
    for name, render in SECTIONS.items():
        start, end = _markers(name)
        generated(text, name)  # both markers present
        text = re.sub(re.escape(start) + r"\n.*?" + re.escape(end),
                      lambda _m, s=start, e=end, r=render: f"{s}\n{r()}{e}", text, count=1, flags=re.DOTALL)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_al.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's generated sections are stale")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    fresh = update(text)
    if args.check:
        if fresh != text:
            print(f"{args.readme}: generated sections are stale; run `make docs`", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        args.readme.write_text(fresh, encoding="utf-8")
        print(f"{args.readme}: updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
