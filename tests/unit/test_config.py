"""Settings: defaults, YAML, environment overrides, validation messages, secrets, rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_al.config import Settings, parse_rate
from stream_al.messages import InputMapping

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "stream-al.yaml"

YAML = """\
classes: [legit, fraud]
positive_class: fraud
seed: 7
input:
  id_field: txn.id
  timestamp_field: null
  features_field: null
  feature_fields: [amount, merchant.risk]
kafka:
  bootstrap_servers: yaml-broker:9092
  group_id: from-yaml
budget:
  fraction: 0.05
  rate: 120 per hour
  max_open_requests: 40
model:
  name: hoeffding_tree
  params: {grace_period: 50}
requests:
  ttl_seconds: 600
"""


def write(tmp_path: Path, text: str = YAML) -> Path:
    path = tmp_path / "stream-al.yaml"
    path.write_text(text)
    return path


def error_locations(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in error["loc"]) for error in exc.errors()}


def test_defaults():
    s = Settings(classes=["legit", "fraud"])
    assert s.classes == ("legit", "fraud")
    assert s.positive_class is None and s.seed == 0 and s.log_level == "INFO"
    assert s.input == InputMapping() and s.input.features_field == "features"
    assert s.kafka.bootstrap_servers == "localhost:9092" and s.kafka.security_protocol == "PLAINTEXT"
    assert s.kafka.sasl_password is None
    assert s.topics.events == "events" and s.topics.labels == "labels" and s.topics.predictions == "predictions"
    assert s.model.name == "logistic_regression" and s.model.params == {}
    assert (s.sampler.initial_threshold, s.sampler.threshold_step, s.sampler.random_share) == (0.9, 0.01, 0.1)
    assert s.budget.fraction == 0.05 and s.budget.rate is None and s.budget.rate_per_second is None
    assert s.budget.clock == "wall" and s.budget.max_open_requests is None
    assert (s.requests.ttl_seconds, s.requests.max_pending, s.requests.label_wait_seconds) == (3600.0, 100_000, 30.0)
    assert s.snapshots.keep == 3 and s.snapshots.key is None
    assert (s.metrics.host, s.metrics.port) == ("127.0.0.1", 9108)


def test_settings_are_frozen():
    s = Settings(classes=["a", "b"])
    with pytest.raises(ValidationError):
        s.seed = 3
    with pytest.raises(ValidationError):
        s.budget.fraction = 0.5


@pytest.mark.parametrize(("classes", "expected"), [
    ("legit, fraud", ("legit", "fraud")),
    ([0, 1], ("0", "1")),
    ([True, False], ("true", "false")),
    (["a", "b", "c"], ("a", "b", "c")),
])
def test_classes_are_canonical_labels(classes, expected):
    assert Settings(classes=classes).classes == expected


def test_yaml_file(tmp_path):
    s = Settings.load(write(tmp_path))
    assert type(s) is Settings
    assert s.classes == ("legit", "fraud") and s.positive_class == "fraud" and s.seed == 7
    assert s.input == InputMapping(id_field="txn.id", timestamp_field=None, features_field=None, feature_fields=("amount", "merchant.risk"))
    assert s.kafka.bootstrap_servers == "yaml-broker:9092" and s.kafka.group_id == "from-yaml"
    assert s.budget.fraction == 0.05 and s.budget.max_open_requests == 40
    assert s.budget.rate_per_second == pytest.approx(120 / 3600)
    assert s.model.name == "hoeffding_tree" and s.model.params == {"grace_period": 50}
    assert s.requests.ttl_seconds == 600.0
    assert s.topics.events == "events"  # absent from the file: default


def test_missing_yaml_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Settings.load(tmp_path / "nope.yaml")


def test_unknown_yaml_keys_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ValidationError) as info:
        Settings.load(write(tmp_path, YAML + "kafka_typo: 1\n"))
    assert "kafka_typo" in error_locations(info.value)
    with pytest.raises(ValidationError) as info:
        Settings.load(write(tmp_path, YAML.replace("group_id:", "group:")))
    assert "kafka.group" in error_locations(info.value)


def test_environment_overrides_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_AL_BUDGET__FRACTION", "0.2")
    monkeypatch.setenv("STREAM_AL_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9093")
    s = Settings.load(write(tmp_path))
    assert s.budget.fraction == 0.2
    assert s.kafka.bootstrap_servers == "env-broker:9093"
    # Only the variables' keys change: the rest of each YAML section stays.
    assert s.budget.rate == "120 per hour" and s.budget.max_open_requests == 40
    assert s.kafka.group_id == "from-yaml"


def test_keyword_overrides_beat_environment_and_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_AL_BUDGET__FRACTION", "0.2")
    s = Settings.load(write(tmp_path), budget={"fraction": 0.3}, seed=11)
    assert s.budget.fraction == 0.3 and s.seed == 11
    assert s.budget.max_open_requests == 40


def test_environment_without_yaml(monkeypatch):
    monkeypatch.setenv("STREAM_AL_BUDGET__FRACTION", "0.25")
    monkeypatch.setenv("STREAM_AL_SEED", "5")
    s = Settings.load(classes=["a", "b"])
    assert s.budget.fraction == 0.25 and s.seed == 5


def test_invalid_environment_value_names_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_AL_BUDGET__FRACTION", "1.5")
    with pytest.raises(ValidationError) as info:
        Settings.load(write(tmp_path))
    assert "budget.fraction" in error_locations(info.value)


@pytest.mark.parametrize(("kwargs", "location", "text"), [
    ({"budget": {"rate": "fast"}}, "budget.rate", "rate 'fast' is not of the form"),
    ({"budget": {"rate": "10 per fortnight"}}, "budget.rate", "not of the form"),
    ({"budget": {"fraction": 1.5}}, "budget.fraction", "less than or equal to 1"),
    ({"budget": {"fraction": 0}}, "budget.fraction", "greater than 0"),
    ({"budget": {"fraction": None}}, "budget", "set at least one of budget.fraction, budget.rate, budget.max_open_requests"),
    ({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}}, "kafka", "needs sasl_username and sasl_password"),
    ({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"}}, "kafka", "needs sasl_username and sasl_password"),
    ({"kafka": {"security_protocol": "SASL_PLAINTEXT"}}, "kafka", "needs sasl_mechanism"),
    ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol", "PLAINTEXT"),
    ({"classes": ["fraud", "fraud"]}, "classes", "classes must be distinct"),
    ({"classes": [1, "1"]}, "classes", "classes must be distinct"),
    ({"classes": ["only"]}, "classes", "at least 2"),
    ({"positive_class": "chargeback"}, "", "positive_class 'chargeback' is not one of classes"),
    ({"sampler": {"random_share": 1.5}}, "sampler.random_share", "less than or equal to 1"),
    ({"requests": {"max_pending": 0}}, "requests.max_pending", "greater than or equal to 1"),
    ({"metrics": {"port": 70000}}, "metrics.port", "less than or equal to 65535"),
])
def test_validation_errors_name_the_field(kwargs, location, text):
    kwargs = {"classes": ["legit", "fraud"], **kwargs}
    with pytest.raises(ValidationError) as info:
        Settings(**kwargs)
    assert location in error_locations(info.value)
    assert text in str(info.value)


def test_sasl_settings_when_complete():
    s = Settings(classes=["a", "b"], kafka={
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "engine", "sasl_password": "pw",
    })
    assert s.kafka.sasl_password.get_secret_value() == "pw"


def test_positive_class_is_canonical():
    assert Settings(classes=[0, 1], positive_class=1).positive_class == "1"


SECRETS = {"sasl": "s3cr3t-sasl-pw", "ssl": "s3cr3t-ssl-pw", "key": "s3cr3t-hmac-key"}


def secret_settings(**extra) -> Settings:
    return Settings(
        classes=["legit", "fraud"],
        kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "engine",
               "sasl_password": SECRETS["sasl"], "ssl_password": SECRETS["ssl"]},
        snapshots={"key": SECRETS["key"]}, **extra,
    )


def test_secrets_never_printed():
    s = secret_settings()
    views = [json.dumps(s.redacted()), repr(s), str(s), repr(s.kafka), str(s.redacted())]
    for view in views:
        for secret in SECRETS.values():
            assert secret not in view
    redacted = s.redacted()
    assert redacted["kafka"]["sasl_password"] == "**********"
    assert redacted["kafka"]["ssl_password"] == "**********"
    assert redacted["snapshots"]["key"] == "**********"
    assert redacted["kafka"]["sasl_username"] == "engine"  # not a secret
    # ...and the values are still there for the code that needs them.
    assert s.kafka.sasl_password.get_secret_value() == SECRETS["sasl"]
    assert s.snapshots.key.get_secret_value() == SECRETS["key"]


def test_secrets_from_environment_survive_load_and_stay_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_AL_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAM_AL_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("STREAM_AL_KAFKA__SASL_USERNAME", "engine")
    monkeypatch.setenv("STREAM_AL_KAFKA__SASL_PASSWORD", SECRETS["sasl"])
    monkeypatch.setenv("STREAM_AL_SNAPSHOTS__KEY", SECRETS["key"])
    s = Settings.load(write(tmp_path))
    assert s.kafka.sasl_password.get_secret_value() == SECRETS["sasl"]
    assert s.snapshots.key.get_secret_value() == SECRETS["key"]
    assert SECRETS["sasl"] not in json.dumps(s.redacted()) + repr(s)
    assert SECRETS["key"] not in json.dumps(s.redacted()) + repr(s)


def test_redacted_is_json_serialisable_and_complete(tmp_path):
    s = Settings.load(write(tmp_path))
    view = json.loads(json.dumps(s.redacted()))
    assert view["classes"] == ["legit", "fraud"]
    assert view["budget"]["rate"] == "120 per hour"
    assert view["snapshots"]["dir"] == "state/snapshots"
    assert set(view) >= {"kafka", "topics", "model", "sampler", "budget", "requests", "snapshots", "metrics", "input"}


@pytest.mark.parametrize(("text", "per_second"), [
    ("120 per hour", 120 / 3600),
    ("120/hour", 120 / 3600),
    ("120 / h", 120 / 3600),
    ("2/s", 2.0),
    ("2 per sec", 2.0),
    ("10 per minute", 10 / 60),
    ("30 per minutes", 0.5),
    ("90/min", 1.5),
    ("1.5 per second", 1.5),
    ("86400 per day", 1.0),
    ("  48 PER Days ", 48 / 86400),
])
def test_parse_rate(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second, rel=1e-12)


@pytest.mark.parametrize("text", ["fast", "", "per hour", "-1 per hour", "10", "10 per fortnight", "ten per hour", "10 per hour per day"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match="not of the form"):
        parse_rate(text)


def test_shipped_config_loads():
    s = Settings.load(SHIPPED)
    assert s.classes == ("legit", "fraud") and s.positive_class == "fraud"
    assert s.budget.fraction == 0.05
    assert s.budget.rate_per_second == pytest.approx(1 / 30)
    assert s.budget.max_open_requests == 500
    assert s.model.name == "logistic_regression"
    assert s.requests.ttl_seconds == 3600.0
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.metrics.host == "127.0.0.1"


# -- the review queue's section --------------------------------------------------------------------


def test_review_section_defaults_tokens_are_secret_and_validated(monkeypatch):
    from pydantic import ValidationError

    from stream_al.config import Settings

    s = Settings(classes=["legit", "fraud"])
    assert s.review.host == "127.0.0.1" and s.review.analysts == {} and 0 <= s.review.double_annotation_share <= 1
    monkeypatch.setenv("STREAM_AL_REVIEW__ANALYSTS", '{"ana": "ana-secret-token"}')
    s = Settings(classes=["legit", "fraud"])
    assert s.review.analysts["ana"].get_secret_value() == "ana-secret-token"
    assert "ana-secret-token" not in repr(s) and "ana-secret-token" not in str(s.redacted())
    monkeypatch.delenv("STREAM_AL_REVIEW__ANALYSTS")
    for analysts, message in [({"ana": "short"}, "at least 8"), ({"a b": "long-enough-token"}, "letters, digits"),
                              ({"ana": "same-token-1", "bob": "same-token-1"}, "distinct")]:
        with pytest.raises(ValidationError, match=message):
            Settings(classes=["legit", "fraud"], review={"analysts": analysts})
    with pytest.raises(ValidationError):
        Settings(classes=["legit", "fraud"], review={"double_annotation_share": 1.5})
