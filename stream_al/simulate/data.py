"""Streams for the simulator: River's bundled datasets, drifting synthetic generators, CSV and JSONL.

A :class:`Stream` is materialised in memory (the simulator replays it once per compared setting and
per baseline), with features already in the engine's form (:func:`stream_al.messages.numeric_features`:
numbers as floats, booleans as 0/1, a string ``v`` of feature ``f`` one-hot as ``f=v``), labels
canonicalised with :func:`stream_al.messages.canonical_label`, and the class set discovered from the
data (or declared).

>>> stream = load_stream("phishing", events=100)
>>> len(stream), stream.classes, stream.positive_class
(100, ('false', 'true'), 'true')
>>> sorted(stream.features[0])[:2]
['age_of_domain', 'anchor_from_other_domain']

Named streams (``NAMES``): ``phishing``, ``bananas`` and ``shuttle`` ship inside River. ``sea``
(SEA, abrupt concept change half-way), ``hyperplane`` (rotating hyperplane, gradual drift),
``agrawal`` (Agrawal, the classification function changes half-way over a short transition) and
``imbalanced`` (a hyperplane concept with about 2% positives) are River generators, seeded.
River's remote datasets (``elec2``, ``creditcard``, ``insects``, ...) are used only when they
are already downloaded; the simulator never downloads anything.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from stream_al.messages import Features, InvalidInput, canonical_label, numeric_features, parse_timestamp


@dataclass
class Stream:
    """A labelled stream in memory: parallel lists of features, labels and (optional) timestamps."""

    name: str
    features: list[Features]
    labels: list[str]
    classes: tuple[str, ...]
    positive_class: str | None
    timestamps: list[float] | None = None
    notes: list[str] = field(default_factory=list)
    drift_points: list[int] = field(default_factory=list)  # event indices where the concept changes (known drift)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def class_counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))


def _river_rows(dataset: Iterable[tuple[dict, Any]]) -> Iterator[tuple[dict[str, Any], Any]]:
    for x, y in dataset:
        yield {str(k): v for k, v in x.items()}, y


def _bundled(name: str) -> Callable[[int], Iterable[tuple[dict, Any]]]:
    def make(seed: int) -> Iterable[tuple[dict, Any]]:
        from river import datasets

        return getattr(datasets, name)()

    return make


def _sea(seed: int, events: int) -> Iterable[tuple[dict, Any]]:
    from river.datasets import synth

    # Abrupt: one concept, then the other (ConceptDriftStream's sigmoid overflows at width 1).
    return itertools.chain(itertools.islice(synth.SEA(variant=0, seed=seed), events // 2), synth.SEA(variant=3, seed=seed + 1))


def _hyperplane(seed: int, events: int) -> Iterable[tuple[dict, Any]]:
    from river.datasets import synth

    return synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05, sigma=0.1)


def _agrawal(seed: int, events: int) -> Iterable[tuple[dict, Any]]:
    from river.datasets import synth

    return synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=0, seed=seed),
        drift_stream=synth.Agrawal(classification_function=2, seed=seed + 1),
        # River's sigmoid overflows when position / width exceeds ~170: keep the width above that.
        position=events // 2, width=max(1, events // 50, events // 300 + 1), seed=seed,
    )


def _imbalanced(seed: int, events: int, positive_share: float = 0.02) -> Iterator[tuple[dict, Any]]:
    """A fixed hyperplane concept whose positives are kept with a probability giving ~2% of events."""
    from river.datasets import synth

    rng = random.Random(seed)
    source = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=0, noise_percentage=0.0)
    keep = positive_share / (1.0 - positive_share)  # the hyperplane splits the cube in half
    for x, y in source:
        if y == 1 and rng.random() >= keep:
            continue
        yield x, y


# name -> (River class, positive class); every named stream is binary.
_BUNDLED = {"phishing": ("Phishing", "true"), "bananas": ("Bananas", "true"), "shuttle": ("Shuttle", "1")}
_GENERATED: dict[str, tuple[Callable[[int, int], Iterable[tuple[dict, Any]]], str]] = {
    "sea": (_sea, "true"), "hyperplane": (_hyperplane, "1"), "agrawal": (_agrawal, "1"), "imbalanced": (_imbalanced, "1"),
}
_BINARY = {"true": ("false", "true"), "1": ("0", "1")}
# River datasets fetched from the internet on first use: used only when already on disk.
_REMOTE = {"elec2": "Elec2", "creditcard": "CreditCard", "insects": "Insects", "keystroke": "Keystroke", "smtp": "SMTP",
           "http": "HTTP", "higgs": "Higgs", "maliciousurl": "MaliciousURL", "trec07": "TREC07", "smsspam": "SMSSpam"}
NAMES = tuple(_BUNDLED) + tuple(_GENERATED)
_DRIFT_HALFWAY = ("sea", "agrawal")  # abrupt concept change half-way (agrawal: the centre of a short sigmoid)
GENERATED_EVENTS = 20_000


def load_stream(
    source: str, target: str | None = None, events: int | None = None, seed: int = 0,
    classes: Iterable[Any] | None = None, positive_class: Any = None, time_column: str | None = None,
    id_column: str | None = None, drift_points: Iterable[int] | None = None, shuffle: bool = False,
) -> Stream:
    """The stream named by ``source``: a name from :data:`NAMES`, or a ``.csv`` / ``.jsonl`` path.

    ``events`` keeps the first N events (generators default to :data:`GENERATED_EVENTS`). ``target``
    names the label column of a file. ``classes`` declares the class set (otherwise: the labels seen).
    ``drift_points``: where the concept changes, for the drift report; ``sea`` and ``agrawal`` know
    theirs (half-way), other streams have none unless given.

    ``shuffle`` replays a fixed-order source (a bundled dataset or a file) in an order drawn from
    ``seed``, before ``events`` keeps the first N: without it every seed sees the same events in the
    same order, and a strategy with no randomness of its own gives one result, however many seeds.
    Generated streams are drawn anew for each seed and keep their order (their drift).

    >>> first = load_stream("phishing", events=50, shuffle=True, seed=1).features[0]
    >>> first == load_stream("phishing", events=50, shuffle=True, seed=1).features[0]
    True
    >>> first == load_stream("phishing", events=50, shuffle=True, seed=2).features[0]
    False
    """
    key = source.lower().replace("-", "").replace("_", "")
    path = Path(source)
    if key in _BUNDLED:
        attr, positive = _BUNDLED[key]
        rows = _river_rows(_bundled(attr)(seed))
        stream = _build(key, _first(rows, events, seed if shuffle else None), None, classes or _BINARY[positive],
                        positive_class or positive)
    elif key in _GENERATED:
        factory, positive = _GENERATED[key]
        n = events or GENERATED_EVENTS
        rows = _river_rows(factory(seed, n))
        stream = _build(key, itertools.islice(rows, n), None, classes or _BINARY[positive], positive_class or positive)
    elif key in _REMOTE and not path.exists():
        stream = _remote(key, events, classes, positive_class)
    elif path.suffix.lower() in (".csv", ".jsonl", ".ndjson") or path.is_file():
        if target is None:
            raise ValueError(f"{source}: name the label column with --target")
        if not path.is_file():
            raise FileNotFoundError(f"{source} does not exist")
        if shuffle and time_column:
            raise ValueError(f"{source}: a stream with a time column keeps its order (do not shuffle it)")
        reader = _jsonl_rows if path.suffix.lower() in (".jsonl", ".ndjson") else _csv_rows
        rows, times = _split_target(reader(path), target, time_column, id_column, str(path))
        stream = _build(path.name, _first(rows, events, seed if shuffle else None), times, classes, positive_class)
    else:
        raise ValueError(
            f"unknown stream {source!r}: use one of {', '.join(NAMES)}, or a .csv / .jsonl file with --target"
        )
    if len(stream) == 0:
        raise ValueError(f"stream {source!r} has no events")
    if drift_points is not None:
        stream.drift_points = sorted(int(p) for p in drift_points if 0 < int(p) < len(stream))
    elif key in _DRIFT_HALFWAY and path.suffix == "":
        stream.drift_points = [(events or GENERATED_EVENTS) // 2]
    return stream


def _first(rows: Iterable[Any], events: int | None, shuffle_seed: int | None) -> Iterable[Any]:
    """The first ``events`` rows (all if None), of the rows in a random order drawn from ``shuffle_seed``
    unless it is None (the whole source is read first, so a short run samples all of it)."""
    if shuffle_seed is None:
        return itertools.islice(rows, events)
    rows = list(rows)
    random.Random(shuffle_seed).shuffle(rows)
    return rows[:events]


def _remote(key: str, events: int | None, classes: Iterable[Any] | None, positive_class: Any) -> Stream:
    from river import datasets

    dataset = getattr(datasets, _REMOTE[key])()
    if not getattr(dataset, "is_downloaded", False):
        raise ValueError(
            f"River's {_REMOTE[key]} dataset is not bundled: it is downloaded from the internet on first use, "
            f"which the simulator does not do. Download it yourself and pass the file with --data PATH --target COLUMN."
        )
    if "classification" not in str(dataset.task).lower() or "multi-output" in str(dataset.task).lower():
        raise ValueError(f"River's {_REMOTE[key]} dataset is not a single-label classification dataset")
    return _build(key, itertools.islice(_river_rows(dataset), events), None, classes, positive_class)


def _number(text: str) -> float | str | None:
    """A CSV cell: empty is missing, a numeric string is a number, anything else stays a string.

    >>> _number("3"), _number(" 2.5e3 "), _number(""), _number("FR"), _number("nan")
    (3.0, 2500.0, None, 'FR', None)
    """
    stripped = text.strip()
    if not stripped:
        return None
    try:
        value = float(stripped)
    except ValueError:
        return stripped
    return value if math.isfinite(value) else None


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield {k: _number(v) if isinstance(v, str) else v for k, v in row.items() if k is not None}


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object per line")
            if isinstance(obj.get("features"), dict):  # the events topic's own layout
                obj = {**{k: v for k, v in obj.items() if k != "features"}, **obj["features"]}
            yield obj


def _split_target(
    rows: Iterator[dict[str, Any]], target: str, time_column: str | None, id_column: str | None, where: str,
) -> tuple[Iterator[tuple[dict[str, Any], Any]], list[float] | None]:
    times: list[float] | None = [] if time_column else None
    dropped = {target, time_column, id_column, "schema_version", "meta"}

    def split() -> Iterator[tuple[dict[str, Any], Any]]:
        for number, row in enumerate(rows, 1):
            if target not in row or row[target] is None:
                raise ValueError(f"{where}: row {number} has no value for target {target!r}")
            if times is not None:
                try:
                    ts = parse_timestamp(row.get(time_column))
                except InvalidInput as exc:
                    raise ValueError(f"{where}: row {number}: {exc.detail}") from None
                if ts is None:
                    raise ValueError(f"{where}: row {number} has no timestamp in {time_column!r}")
                times.append(ts)
            label = row[target]
            if isinstance(label, float) and label.is_integer():
                label = int(label)  # a CSV "1" is the class 1, not 1.0
            yield {k: v for k, v in row.items() if k not in dropped}, label

    return split(), times


def _build(
    name: str, rows: Iterable[tuple[dict[str, Any], Any]], times: list[float] | None,
    classes: Iterable[Any] | None, positive_class: Any,
) -> Stream:
    features: list[Features] = []
    labels: list[str] = []
    for number, (raw, label) in enumerate(rows, 1):
        try:
            features.append(numeric_features(raw, f"{name} row {number}"))
            labels.append(canonical_label(label))
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None
    counts = Counter(labels)
    if classes is not None:
        declared = tuple(canonical_label(c) for c in classes)
        unknown = set(counts) - set(declared)
        if unknown:
            raise ValueError(f"{name}: labels {sorted(unknown)} are not in the declared classes {list(declared)}")
        class_set = declared
    else:
        class_set = tuple(sorted(counts))
    if len(class_set) < 2:
        raise ValueError(f"{name}: a classifier needs at least two classes, found {list(class_set)}")
    positive = canonical_label(positive_class) if positive_class is not None else _guess_positive(class_set, counts)
    if positive is not None and positive not in class_set:
        raise ValueError(f"{name}: positive class {positive!r} is not one of {list(class_set)}")
    return Stream(name, features, labels, class_set, positive, times[: len(labels)] if times is not None else None)


def _guess_positive(classes: tuple[str, ...], counts: Counter[str]) -> str | None:
    """For two classes: ``true`` or ``1`` when present, else the rarer class. None for more classes.

    >>> _guess_positive(("0", "1"), Counter({"0": 5, "1": 9})), _guess_positive(("a", "b"), Counter({"a": 5, "b": 9}))
    ('1', 'a')
    """
    if len(classes) != 2:
        return None
    for name in ("true", "1", "yes", "fraud", "positive"):
        if name in classes:
            return name
    return min(classes, key=lambda c: (counts.get(c, 0), c))
