"""Message contracts (DESIGN §2) and the event input mapping.

Every message on a stream-al topic is JSON with a ``schema_version``. The pydantic models below are
the contract; they validate everything that is human-scale (labels, label requests). Events are the
hot path (tens of thousands per second), so :class:`EventParser` decodes them with orjson and checks
them by hand, with exactly the rules of :class:`EventMessage` (a contract test keeps the two equal).

Features always come out as ``{name: float}``: booleans become 0/1 and a string value ``v`` of
feature ``f`` becomes the one-hot feature ``"f=v": 1.0``, so every River model can learn from them.

>>> parser = EventParser(InputMapping())
>>> event = parser.parse(b'{"id": "e1", "ts": 1700000000, "features": {"amount": 12.5, "country": "FR"}}', "events", 0, 7)
>>> event.id, event.ts, event.features
('e1', 1700000000.0, {'amount': 12.5, 'country=FR': 1.0})
>>> try:
...     parser.parse(b'{"features": {"amount": [1, 2]}}', "events", 0, 8)
... except InvalidInput as exc:
...     print(exc.reason, "-", exc.detail)
invalid_event - features.amount has type list
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

FeatureValue = float | int | bool | str | None
Features = dict[str, float]
FeatureType = Literal["number", "category"]


class InvalidInput(ValueError):
    """Input that cannot be used; ``reason`` is a short, low-cardinality code for metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------------
# Events


class InputMapping(BaseModel):
    """Where the engine finds the id, the timestamp and the features in a user's event.

    Fields are dotted paths into the JSON object. Features come from exactly one of:
    ``features_field`` (an object of name → value, the default layout), ``feature_fields`` (an
    explicit list of paths), or, when both are unset, every top-level numeric or boolean field except
    ``id_field``, ``timestamp_field`` and ``exclude_fields``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id_field: str = "id"
    timestamp_field: str | None = "ts"
    features_field: str | None = "features"
    feature_fields: tuple[str, ...] | None = None
    exclude_fields: tuple[str, ...] = ()
    # Declared types make a wrong-typed value a dead letter instead of a new feature: without them
    # a string in a numeric field (``"amount": "NaN?"``) becomes the one-hot ``amount=NaN?``.
    feature_types: dict[str, FeatureType] = Field(
        default_factory=dict, description="feature name -> number or category; a value of another type is a dead letter",
    )

    @model_validator(mode="after")
    def _one_feature_source(self) -> InputMapping:
        if self.features_field and self.feature_fields:
            raise ValueError("set either features_field or feature_fields, not both")
        if self.feature_fields is not None:
            unknown = sorted(set(self.feature_types) - set(self.feature_fields))
            if unknown:
                raise ValueError(f"feature_types names {unknown}, which feature_fields does not list")
        return self


@dataclass(slots=True)
class Event:
    """An event as the engine core sees it: id, event time (epoch seconds) and numeric features."""

    id: str
    ts: float | None
    features: Features
    # Where it was read (the events topic's partition and offset); None outside Kafka. A request
    # carries it, so a replica that resumes or takes over a partition knows which requests were
    # made for the events it is about to replay (Engine.charge_replayed).
    partition: int | None = None
    offset: int | None = None


class EventMessage(BaseModel):
    """The canonical event shape: ``{id, ts?, features, meta?}``."""

    model_config = ConfigDict(extra="allow")

    schema_version: Any = SCHEMA_VERSION  # not checked: newer producers may send newer versions
    id: str | None = None
    ts: float | str | None = None
    features: dict[str, FeatureValue]
    meta: Any = None

    @field_validator("id", mode="before")
    @classmethod
    def _string_or_integer(cls, value: Any) -> str | None:
        if value is None or (type(value) is str and value):
            return value
        if type(value) is int:
            return str(value)
        raise ValueError("id must be a non-empty string or an integer")

    @field_validator("ts", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> float | None:
        try:
            return parse_timestamp(value)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None

    @field_validator("features")
    @classmethod
    def _finite(cls, features: dict[str, FeatureValue]) -> dict[str, FeatureValue]:
        for name, value in features.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"feature {name!r} is not finite")
        return features


def _get_path(obj: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch seconds, epoch milliseconds or an ISO-8601 string.

    >>> parse_timestamp(1700000000123), parse_timestamp("2023-11-14T22:13:20Z")
    (1700000000.123, 1700000000.0)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput("invalid_event", "timestamp is a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidInput("invalid_event", "timestamp is not finite")
        # Anything past year 5138 in seconds is really milliseconds.
        return value / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("invalid_event", f"timestamp {value[:40]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    raise InvalidInput("invalid_event", f"timestamp has type {type(value).__name__}")


def numeric_features(raw: dict[str, Any], source: str = "features", types: dict[str, FeatureType] | None = None) -> Features:
    """Turn ``{name: number|bool|str|null}`` into ``{name: float}`` (one-hot strings, drop nulls).

    ``types`` declares some names: a ``number`` must be a finite number or a string holding one, a
    ``category`` a string, integer or boolean (one-hot either way); anything else is invalid.

    >>> numeric_features({"a": 1, "b": True, "c": "x", "d": None})
    {'a': 1.0, 'b': 1.0, 'c=x': 1.0}
    >>> numeric_features({"amount": "12.5", "mcc": 5411}, types={"amount": "number", "mcc": "category"})
    {'amount': 12.5, 'mcc=5411': 1.0}
    >>> try:
    ...     numeric_features({"amount": "NaN?"}, types={"amount": "number"})
    ... except InvalidInput as exc:
    ...     print(exc.reason, "-", exc.detail)
    invalid_event - features.amount must be a number, got 'NaN?'
    """
    out: Features = {}
    for name, value in raw.items():
        if types and value is not None and name in types:
            value = _declared(value, types[name], f"{source}.{name}")
        kind = type(value)
        if kind is float:
            if value != value or value in (math.inf, -math.inf):
                raise InvalidInput("invalid_event", f"{source}.{name} is not finite")
            out[name] = value
        elif kind is int or kind is bool:
            out[name] = float(value)
        elif kind is str:
            out[f"{name}={value}"] = 1.0
        elif value is None:
            continue
        else:
            raise InvalidInput("invalid_event", f"{source}.{name} has type {kind.__name__}")
    return out


def _declared(value: Any, declared: FeatureType, where: str) -> float | str:
    """A value of a feature with a declared type, as :func:`numeric_features` then takes it:
    a float for a number (not finite is caught there), a string for a category."""
    kind = type(value)
    if declared == "number":
        if kind is float or kind is int:
            return float(value)
        if kind is str:
            try:
                return float(value)
            except ValueError:
                pass
        raise InvalidInput("invalid_event", f"{where} must be a number, got {value!r}")
    if kind is str or kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    raise InvalidInput("invalid_event", f"{where} must be a category (a string, integer or boolean), got {value!r}")


_is_float = float.__instancecheck__  # orjson decodes numbers as exact int or float, never a subclass


class EventParser:
    """Decodes raw event bytes with an :class:`InputMapping` into an :class:`Event`."""

    __slots__ = ("mapping", "_excluded", "_id_key", "_ts_key", "_features_key", "_types", "_floats_fit_types")

    def __init__(self, mapping: InputMapping):
        self.mapping = mapping
        self._excluded = {mapping.id_field, mapping.timestamp_field, "schema_version", "meta", *mapping.exclude_fields}
        # Top-level fields (no dots) are read with one dict lookup; None means "walk the dotted path".
        self._id_key = mapping.id_field if "." not in mapping.id_field else None
        self._ts_key = mapping.timestamp_field if mapping.timestamp_field and "." not in mapping.timestamp_field else None
        self._features_key = mapping.features_field if mapping.features_field and "." not in mapping.features_field else None
        self._types = mapping.feature_types
        self._floats_fit_types = "category" not in mapping.feature_types.values()  # then all-float features pass as they are

    def parse(self, raw: bytes, topic: str, partition: int, offset: int) -> Event:
        """Parse one event read at (topic, partition, offset); that position is its id when it has none."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _decode_error(exc) from None
        if type(obj) is not dict:
            raise InvalidInput("invalid_event", f"event is a JSON {type(obj).__name__}, not an object")
        mapping = self.mapping
        event_id = obj.get(self._id_key) if self._id_key is not None else _get_path(obj, mapping.id_field)
        if event_id is None:
            event_id = f"{topic}:{partition}:{offset}"
        elif type(event_id) is int:
            event_id = str(event_id)
        elif type(event_id) is not str or not event_id:
            raise InvalidInput("invalid_event", f"id field {mapping.id_field!r} must be a non-empty string or integer")
        if self._ts_key is not None:
            ts = obj.get(self._ts_key)
            # Epoch seconds as a float, the common case, is kept as is (what parse_timestamp returns for it).
            if ts is not None and (type(ts) is not float or ts > 1e11):
                ts = parse_timestamp(ts)
        else:
            ts = parse_timestamp(_get_path(obj, mapping.timestamp_field)) if mapping.timestamp_field else None
        if mapping.features_field:
            raw_features = obj.get(self._features_key) if self._features_key is not None else _get_path(obj, mapping.features_field)
            if type(raw_features) is not dict:
                raise InvalidInput("invalid_event", f"field {mapping.features_field!r} must be an object of features")
            if raw_features and self._floats_fit_types and all(map(_is_float, raw_features.values())):
                features = raw_features  # the common case; orjson never decodes NaN or infinity
            else:
                features = numeric_features(raw_features, mapping.features_field, self._types)
        elif mapping.feature_fields:
            features = numeric_features({path: _get_path(obj, path) for path in mapping.feature_fields}, "event", self._types)
        else:
            excluded, types = self._excluded, self._types
            features = numeric_features(
                {k: v for k, v in obj.items() if k not in excluded and (type(v) in (int, float, bool) or k in types)},
                "event", types,
            )
        if not features:
            raise InvalidInput("invalid_event", "event has no features")
        return Event(event_id, ts, features, partition, offset)


# ---------------------------------------------------------------------------------------------
# Labels, label requests, predictions


def canonical_label(value: Any) -> str:
    """Labels travel as JSON strings, integers or booleans; the engine keys classes by string.

    >>> canonical_label(1), canonical_label("fraud"), canonical_label(True)
    ('1', 'fraud', 'true')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise InvalidInput("invalid_label", f"label must be a non-empty string, integer or boolean, got {value!r}")


class LabelMessage(BaseModel):
    """An analyst's answer, or late ground truth (``features`` and no known request)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    request_id: str | None = None
    event_id: str | None = None
    label: str | int | bool
    annotator: str | None = None
    labeled_at: float | None = None
    features: dict[str, FeatureValue] | None = None

    @model_validator(mode="after")
    def _identified(self) -> LabelMessage:
        if not self.request_id and not self.event_id:
            raise ValueError("a label needs a request_id or an event_id")
        return self


Reason = Literal["uncertainty", "random", "drift_boost", "cold_start"]


class LabelRequest(BaseModel):
    """A request for an analyst's label. It carries the features so any replica can learn from the answer."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    request_id: str
    event_id: str
    created_at: float = Field(description="epoch seconds")
    expires_at: float = Field(description="epoch seconds")
    features: Features
    scores: dict[str, float]
    predicted: str | None
    uncertainty: float
    reason: str
    p_query: float
    priority: float
    model_version: int
    contributions: dict[str, float] | None = Field(
        None, description="linear models only: the features that pushed the score most (weight x scaled value)"
    )
    partition: int | None = Field(None, description="the event's partition in the events topic (None outside Kafka)")
    offset: int | None = Field(None, description="the event's offset in that partition")

    def to_json(self) -> bytes:
        """The bytes of ``model_dump_json()``, ~3x faster: every field is a JSON-native value.

        >>> request = LabelRequest(request_id="r", event_id="e", created_at=1.0, expires_at=2.0, features={"x": 0.5},
        ...                        scores={"a": 1.0}, predicted="a", uncertainty=0.0, reason="random", p_query=0.1,
        ...                        priority=0.0, model_version=0)
        >>> request.to_json() == request.model_dump_json().encode()
        True
        """
        return orjson.dumps(self.__dict__)


class ModelControl(BaseModel):
    """A model change, written to the ``labels`` topic so every replica and every replay makes it at
    the same point of the label log (DESIGN §3). ``background_start``: train a new model beside the
    live one from the next label on; ``model_swap``: put that model in place of the live one once it
    has learned ``drift.background_min_labels`` labels (starting one now if there is none)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    control: Literal["background_start", "model_swap"]
    control_id: str
    signal: str
    issued_at: float = Field(description="epoch seconds")
    issued_by: str | None = Field(None, description="the replica (kafka.client_id) whose detector fired")


class Prediction(BaseModel):
    """One scored event on the optional ``predictions`` topic."""

    schema_version: int = SCHEMA_VERSION
    event_id: str
    predicted: str | None
    scores: dict[str, float]
    model_version: int
    queried: bool


def _decode_error(exc: orjson.JSONDecodeError) -> InvalidInput:
    # Valid JSON whose number overflows a double is bad content, not bad syntax.
    if "infinity" in str(exc):
        return InvalidInput("invalid_event", f"a number is out of range: {exc}")
    return InvalidInput("malformed_json", str(exc))


def parse_label_log(raw: bytes) -> LabelMessage | ModelControl:
    """Decode and validate a record of the ``labels`` topic, raising :class:`InvalidInput` with a
    reason: a label, or a :class:`ModelControl` (it has a ``control`` field).

    >>> parse_label_log(b'{"control": "model_swap", "control_id": "c1", "signal": "score", "issued_at": 1}').control
    'model_swap'
    >>> parse_label_log(b'{"request_id": "rq-1", "label": "fraud"}').label
    'fraud'
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc) from None
    if isinstance(obj, dict) and "control" in obj:
        model, reason = ModelControl, "invalid_control"
    else:
        model, reason = LabelMessage, "invalid_label"
    try:
        return model.model_validate(obj)
    except ValueError as exc:
        raise InvalidInput(reason, _first_error(exc)) from None


def parse_label_request(raw: bytes) -> LabelRequest:
    """Decode and validate a label request read back from the ``label-requests`` topic."""
    try:
        return LabelRequest.model_validate_json(raw)
    except ValueError as exc:
        raise InvalidInput("invalid_request", _first_error(exc)) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        return f"{where}: {first.get('msg')}"
    return str(exc)
