"""Settings: one frozen, typed object built from a YAML file plus ``STREAM_AL_...`` variables.

Precedence, highest first: explicit keyword arguments, environment variables (nested with ``__``,
e.g. ``STREAM_AL_KAFKA__BOOTSTRAP_SERVERS``), the YAML file, the defaults below. Every field is
validated; a wrong value stops the engine at start with the field's path in the message. Secrets are
``SecretStr`` and print as ``**********``.

>>> s = Settings(classes=["legit", "fraud"], budget={"fraction": 0.05, "rate": "120 per hour"})
>>> s.budget.rate_per_second
0.03333333333333333
>>> s.kafka.sasl_password is None and s.model.name
'logistic_regression'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from stream_al.messages import InputMapping, canonical_label
from stream_al.sampling.strategies import StrategyName, UtilityName

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/|per)\s*([a-z]+?)s?\s*$")


def parse_rate(text: str) -> float:
    """Events per second from ``"120 per hour"``, ``"120/hour"``, ``"2/s"``, ``"10 per minute"``.

    >>> parse_rate("120 per hour"), parse_rate("2/s"), parse_rate("30 per minutes")
    (0.03333333333333333, 2.0, 0.5)
    """
    match = _RATE.match(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"rate {text!r} is not of the form 'N per second|minute|hour|day' (or 'N/h')")
    return float(match.group(1)) / _UNITS[match.group(2)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Connection settings, passed through to kafka-python (SASL/SSL included)."""

    bootstrap_servers: str = "localhost:9092"
    group_id: str = "stream-al"
    client_id: str = "stream-al"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    auto_offset_reset: Literal["earliest", "latest"] = Field("earliest", description="events, for a new consumer group")
    session_timeout_ms: int = Field(10_000, ge=1000)
    max_poll_interval_ms: int = Field(
        30_000, ge=5000, description="also bounds a group join: kafka-python's poll blocks while the group forms",
    )
    max_poll_records: int = Field(1000, ge=1, description="bounds memory: events taken per poll")
    producer_linger_ms: int = Field(5, ge=0)
    request_timeout_ms: int = Field(30_000, ge=500)
    delivery_timeout_ms: int = Field(120_000, ge=1000, description="a send not acknowledged by then fails the next checkpoint")
    max_outage_seconds: float = Field(300.0, gt=0, description="broker unreachable this long: exit non-zero")

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> KafkaSettings:
        if self.delivery_timeout_ms < self.request_timeout_ms + self.producer_linger_ms:
            raise ValueError("delivery_timeout_ms must be at least request_timeout_ms + producer_linger_ms")
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password")
        return self


class TopicSettings(_Section):
    """Topic names (DESIGN §2) and the partition counts used by ``stream-al topics create``."""

    events: str = "events"
    label_requests: str = "label-requests"
    labels: str = "labels"
    predictions: str | None = Field("predictions", description="null disables the predictions output")
    dead_letters: str = "dead-letters"
    drift: str | None = Field("drift", description="drift alerts (JSON); null disables them")
    events_partitions: int = Field(4, ge=1)
    label_requests_partitions: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)


class ModelSettings(_Section):
    """Which River classifier to build: a short name or a dotted import path, with parameters."""

    name: str = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)


class SamplerSettings(_Section):
    """Which strategy picks the events worth a label (see :mod:`stream_al.sampling.strategies`).

    Every strategy shares the budgets and the random audit share; the other fields are parameters
    of the strategies that use them.
    """

    strategy: StrategyName = Field("quantile_filter", description="random, fixed_uncertainty, variable_uncertainty, "
        "randomized_variable_uncertainty, split, entropy, quantile_filter, committee, anomaly, exploit_explore")
    # margin: on two classes the same as least confidence; on more it looks at the runner-up too
    # (ImageSegments, 7 classes, 5%: .683 against random's .626, where least confidence had .574).
    utility: UtilityName = Field("margin", description="uncertainty measure of threshold and quantile strategies")
    balance_classes: bool = Field(False, description="measure uncertainty against the running class prior (rare positives)")
    balance_horizon: int = Field(2000, ge=10, description="events the class prior is averaged over")
    initial_threshold: float = Field(0.9, gt=0, le=1, description="variable thresholds: query while confidence < threshold")
    threshold_step: float = Field(0.01, gt=0, lt=1)
    fixed_threshold: float = Field(0.9, gt=0, le=1, description="fixed_uncertainty: query while confidence < this")
    randomization: float = Field(1.0, ge=0, description="randomized_variable_uncertainty: threshold x N(1, this)")
    random_share: float = Field(0.1, ge=0, le=1, description="share of the budget spent on random audit labels")
    split_share: float = Field(0.2, ge=0, le=1, description="split: its random share (replaces random_share)")
    quantile_window: int = Field(1000, ge=10, description="quantile strategies: recent utilities the quantile is taken over")
    warm_start: int = Field(10, ge=0, description="quantile_filter: its first labels go to random events, one per stretch that earns a label")
    entropy_exponent: float = Field(3.0, gt=0, description="entropy: query probability proportional to entropy^this")
    exploit_share: float = Field(0.5, ge=0, le=1, description="exploit_explore: share of the budget for the likeliest positives")


class BoostSettings(_Section):
    """A drift boost (DESIGN §5): temporary extra labels from a separate allowance, under a hard cap."""

    allowance: str = Field("50 per day", description="labels boosts may spend: a rate, bursting up to one unit's worth")
    max_extra_fraction: float = Field(0.05, gt=0, le=1, description="most extra labels per event while boosted")
    max_seconds: float = Field(3600.0, gt=0, description="longest boost")
    hard_cap_fraction: float = Field(0.2, gt=0, le=1, description="all labels, boosted or not, never above this per event")

    @field_validator("allowance")
    @classmethod
    def _allowance_parses(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def allowance_per_second(self) -> float:
        return parse_rate(self.allowance)

    @property
    def allowance_burst(self) -> float:
        """One unit of the allowance: ``50 per day`` may all be spent at once, never more."""
        match = _RATE.match(self.allowance.lower())
        assert match is not None
        return max(1.0, float(match.group(1)))


class BudgetSettings(_Section):
    """How many labels may be asked for; several limits may be set at once and all must hold."""

    fraction: float | None = Field(0.05, gt=0, le=1, description="labels per event")
    fraction_burst: float | None = Field(None, gt=0, description="most labels saved up for a burst (default 10)")
    rate: str | None = Field(None, description="e.g. '120 per hour'")
    rate_burst: float | None = Field(None, ge=1, description="token bucket size (default: ten seconds of rate, >= 1)")
    clock: Literal["wall", "event"] = "wall"
    max_open_requests: int | None = Field(None, ge=1, description="analyst backlog cap")
    boost: BoostSettings | None = Field(None, description="drift boost allowance; null: no boost")

    @field_validator("rate")
    @classmethod
    def _rate_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSettings:
        if self.fraction is None and self.rate is None and self.max_open_requests is None:
            raise ValueError("set at least one of budget.fraction, budget.rate, budget.max_open_requests")
        if self.boost is not None and self.fraction is not None and self.boost.hard_cap_fraction < self.fraction:
            raise ValueError(f"budget.boost.hard_cap_fraction {self.boost.hard_cap_fraction} is below budget.fraction {self.fraction}")
        return self

    @property
    def rate_per_second(self) -> float | None:
        return parse_rate(self.rate) if self.rate else None


class DriftSettings(_Section):
    """Drift monitoring (DESIGN §6, :mod:`stream_al.drift`) and what a drift sets off."""

    enabled: bool = True
    block_events: int = Field(50, ge=1, description="label-free signals are watched as means over blocks of this many events")
    warmup_events: int = Field(2000, ge=0, description="events before the stream view starts (a new model moves fast)")
    calibration_blocks: int = Field(20, ge=2, description="values that set each label-free detector's reference (again after each drift)")
    threshold: float = Field(10.0, gt=0, description="stream-view CUSUM drift threshold, in standard deviations")
    warning_threshold: float = Field(5.0, gt=0, description="stream-view CUSUM warning threshold (starts a background model)")
    allowance: float = Field(0.5, ge=0, description="stream-view CUSUM slack per value, in standard deviations")
    output_tolerance: float = Field(
        0.25, ge=0, description="score and uncertainty block means: moves up to this far from the reference "
        "are the model's own wander, not evidence (stationary streams: up to ~0.15)",
    )
    would_query_tolerance: float = Field(
        0.5, ge=0, description="the same for the would-query share, which a tree's splits move by up to ~0.45",
    )
    reference_halflife_blocks: float = Field(200.0, gt=0, description="how fast a stable reference follows slow change")
    min_std: float = Field(0.002, gt=0, description="smallest spread a block-mean reference may have")
    label_threshold: float = Field(
        10.0, ge=0, description="label_error CUSUM drift threshold (warning at half), in standard deviations; 0 turns it off"
    )
    label_allowance: float = Field(0.5, ge=0, description="label_error CUSUM slack per label, in standard deviations")
    label_warmup: int = Field(100, ge=0, description="labels (after start or a swap) before label errors are watched")
    label_calibration: int = Field(100, ge=2, description="labels that set the label_error reference (again after each drift)")
    label_halflife: float = Field(2000.0, gt=0, description="labels over which the label_error reference follows slow change")
    features: tuple[str, ...] = Field((), description="features watched one by one (block means)")
    audit_delta: float = Field(0.002, gt=0, lt=1, description="ADWIN confidence on audit-label errors")
    audit_min_labels: int = Field(30, ge=1, description="audit labels before their detector may fire")
    audit_window: int = Field(200, ge=1, description="audit labels in the rolling audit accuracy")
    boost: bool = Field(True, description="a drift starts a budget boost (needs budget.boost)")
    background_model: bool = Field(False, description="a warning trains a new model; a drift swaps it in (via the label log)")
    background_min_labels: int = Field(50, ge=1, description="labels a background model learns before it may be swapped in")
    background_max_labels: int = Field(1000, ge=1, description="a background model not swapped in after this many labels is dropped")
    swap_cooldown_labels: int = Field(200, ge=0, description="a swap this soon after the last one is ignored")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> DriftSettings:
        if self.warning_threshold > self.threshold:
            raise ValueError(f"drift.warning_threshold {self.warning_threshold} is above drift.threshold {self.threshold}")
        return self


class RequestSettings(_Section):
    """Lifetimes and bounds of the engine's stores."""

    ttl_seconds: float = Field(3600.0, gt=0, description="a request expires this long after it is made")
    max_pending: int = Field(100_000, ge=1, description="open requests kept; the oldest expire first")
    label_wait_seconds: float = Field(30.0, ge=0, description="how long a label may wait for its request")
    applied_window: int = Field(100_000, ge=1, description="answered requests remembered to absorb duplicates")
    correction_window: int = Field(10_000, ge=1, description="latest answers whose features are kept for corrections")


class SnapshotSettings(_Section):
    """Checkpoints (DESIGN §4): signed, atomic, periodic and on stop."""

    dir: Path = Path("state/snapshots")
    interval_seconds: float = Field(30.0, gt=0)
    every_labels: int = Field(500, ge=1)
    keep: int = Field(3, ge=1)
    key: SecretStr | None = Field(None, description="HMAC key; default: a random key kept in <dir>/.key")


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535, description="0 picks a free port")


_ANALYST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class ReviewSettings(_Section):
    """The analysts' review queue (``stream-al review``): web server, store, claims, priority, analysts."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535, description="0 picks a free port")
    db_path: Path = Field(Path("state/review.sqlite3"), description="SQLite file; empty or missing: rebuilt from the topics")
    claim_ttl_seconds: float = Field(60.0, ge=2, description="an open card renews its claim; an abandoned one returns after this")
    analysts: dict[str, SecretStr] = Field(default_factory=dict, description="analyst name -> sign-in token")
    double_annotation_share: float = Field(0.1, ge=0, le=1, description="share of items answered by two analysts (agreement)")
    amend_window_seconds: float = Field(900.0, gt=0, description="how long an answer may be undone or amended")
    score_weight: float = Field(0.5, ge=0, description="queue rank: weight of the positive-class score")
    age_weight: float = Field(0.5, ge=0, description="queue rank: weight of the request's age (nothing starves)")
    age_horizon_seconds: float = Field(600.0, gt=0, description="age at which the age term is full")
    page_size: int = Field(30, ge=1, le=500, description="queue rows pushed to each analyst")

    @field_validator("analysts")
    @classmethod
    def _analysts_valid(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, token in value.items():
            if not _ANALYST_NAME.match(name):
                raise ValueError(f"analyst name {name!r} must be 1-40 letters, digits, '_', '.', '-'")
            if len(token.get_secret_value()) < 8:
                raise ValueError(f"analyst {name!r}: token must be at least 8 characters")
        tokens = [t.get_secret_value() for t in value.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("analyst tokens must be distinct")
        return value


class Settings(BaseSettings):
    """Everything the engine needs. Build it with :meth:`Settings.load`."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="STREAM_AL_", env_nested_delimiter="__", yaml_file=None
    )

    classes: tuple[str, ...] = Field(min_length=2, description="the class set; labels outside it are rejected")
    positive_class: str | None = Field(None, description="the class analysts hunt for (reports, F1)")
    seed: int = 0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    input: InputMapping = InputMapping()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    model: ModelSettings = ModelSettings()
    sampler: SamplerSettings = SamplerSettings()
    budget: BudgetSettings = BudgetSettings()
    requests: RequestSettings = RequestSettings()
    drift: DriftSettings = DriftSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    metrics: MetricsSettings = MetricsSettings()
    review: ReviewSettings = ReviewSettings()

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_are_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        labels = tuple(canonical_label(v) for v in value)
        if len(set(labels)) != len(labels):
            raise ValueError(f"classes must be distinct, got {list(labels)}")
        return labels

    @field_validator("positive_class", mode="before")
    @classmethod
    def _positive_is_label(cls, value: Any) -> Any:
        return None if value is None else canonical_label(value)

    @model_validator(mode="after")
    def _positive_in_classes(self) -> Settings:
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of classes {list(self.classes)}")
        if self.sampler.strategy in ("exploit_explore", "anomaly") and self.positive_class is None:
            raise ValueError(f"sampler.strategy {self.sampler.strategy} needs positive_class")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings from a YAML file (optional), the environment, and keyword overrides."""
        if path is None:
            return cls(**overrides)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        bound = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "yaml_file": path}})
        loaded = bound(**overrides)
        return cls.model_validate(loaded.model_dump())

    def redacted(self) -> dict[str, Any]:
        """A JSON-able view with secrets masked, for logs and ``stream-al config``."""
        return self.model_dump(mode="json")
