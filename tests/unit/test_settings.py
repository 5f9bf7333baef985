"""Unit tests of ``streams.settings``: what an operator sets and what start-up says about it.

The documented defaults hold, ``CRM_*`` variables override them, and a bad value stops start-up
with a message naming the variable, never leaking the Redis password.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from online_models.scoring.scorer import CustomerScorer
from online_models.segments.density import DensitySegmenter
from streams.settings import ENV_PREFIX, Settings, SettingsError, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORD = "s3cr3t-Pa55w0rd"
SETTINGS_ROW = re.compile(r"^\| `(CRM_[A-Z0-9_]+)` \| `([^`]*)` \|", re.MULTILINE)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell running pytest exports."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def readme_settings() -> dict[str, str]:
    """The settings table of README.md: variable -> documented default."""
    return dict(SETTINGS_ROW.findall(README.read_text(encoding="utf-8")))


def documented(value: object) -> str:
    """A default as the README writes it."""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The start-up message for the given environment."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# --- defaults and overrides -----------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()

    assert settings.broker == "kafka://localhost:9092"
    assert settings.broker_hosts == ["localhost:9092"]
    assert settings.redis_url.get_secret_value() == "redis://localhost:6379/0"
    assert settings.app_id == "crm-scorer"
    assert settings.events_topic == "crm.events"
    assert settings.alerts_topic == "crm.alerts"
    assert settings.dlq_topic == "crm.events.dlq"
    assert settings.web_port == 6066
    assert settings.redis_prefix == "crm:score:"
    assert settings.churn_horizon_days == 90
    assert settings.top_k == 10


def test_every_default_matches_the_readme_table() -> None:
    table = readme_settings()

    for name, field in Settings.model_fields.items():
        assert table.get(env_name(name)) == documented(field.default), env_name(name)


def test_readme_lists_every_setting_and_no_other() -> None:
    documented_names = set(readme_settings())
    expected = {env_name(name) for name in Settings.model_fields}

    assert expected - documented_names == set(), "settings missing from README.md"
    assert documented_names - expected == set(), "README.md documents unknown settings"


def test_crm_environment_variables_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_BROKER", "kafka://k1:9092;kafka://k2:9093")
    monkeypatch.setenv("CRM_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("CRM_APP_ID", "scorer-eu")
    monkeypatch.setenv("CRM_EVENTS_TOPIC", "eu.events")
    monkeypatch.setenv("CRM_WEB_PORT", "9100")
    monkeypatch.setenv("CRM_REDIS_PREFIX", "eu:score:")
    monkeypatch.setenv("CRM_CHURN_HORIZON_DAYS", "30")
    monkeypatch.setenv("CRM_TOP_K", "5")
    monkeypatch.setenv("CRM_ALLOW_REPURCHASE", "true")
    monkeypatch.setenv("CRM_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CRM_DATA_DIR", "/var/lib/crm")

    settings = load_settings()

    assert settings.broker_hosts == ["k1:9092", "k2:9093"]
    assert settings.redis_url.get_secret_value() == "redis://cache:6380/2"
    assert settings.app_id == "scorer-eu"
    assert settings.events_topic == "eu.events"
    assert settings.web_port == 9100
    assert settings.redis_prefix == "eu:score:"
    assert settings.churn_horizon_days == 30.0
    assert settings.top_k == 5
    assert settings.allow_repurchase is True
    assert settings.log_level == "debug"
    assert settings.data_dir == Path("/var/lib/crm")


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_PORT", "1234")
    monkeypatch.setenv("BROKER", "nonsense")

    assert load_settings().web_port == 6066


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CRM_WEB_PORT", "abc"),
        ("CRM_WEB_PORT", "70000"),
        ("CRM_WEB_PORT", "0"),
        ("CRM_BROKER", "localhost:9092"),
        ("CRM_BROKER", "kafka://a:1;b:2"),
        ("CRM_REDIS_URL", "http://x"),
        ("CRM_CHURN_ALERT_THRESHOLD", "1.5"),
        ("CRM_SEGMENTS", "1"),
        ("CRM_LOG_LEVEL", "loud"),
        ("CRM_STORE", "foo://"),
        ("CRM_TOP_K", "0"),
        ("CRM_RERANK_SILENT_DAYS", "-1"),
        ("CRM_ALLOW_REPURCHASE", "maybe"),
        ("CRM_REDIS_FLUSH_MS", "-5"),
        ("CRM_APP_ID", ""),
        ("CRM_VALUE_HALFLIFE_DAYS", "5"),  # its label weights would overflow
        ("CRM_VALUE_SAMPLE_DAYS", "0.01"),  # an example at nearly every score
        ("CRM_SEGMENT_GROUP_MADS", "-1"),
        ("CRM_SEGMENT_GROUP_TIGHTNESS", "0"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    message = settings_error(monkeypatch, **{variable: value})

    assert message.startswith("invalid setting")
    assert variable in message


@pytest.mark.parametrize(
    "env",
    [
        {"CRM_ALERTS_TOPIC": "crm.events"},
        {"CRM_DLQ_TOPIC": "crm.alerts"},
        {"CRM_EVENTS_TOPIC": "shared", "CRM_DLQ_TOPIC": "shared"},
    ],
    ids=["alerts=events", "dlq=alerts", "events=dlq"],
)
def test_the_same_topic_for_two_purposes_stops_start_up_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    message = settings_error(monkeypatch, **env)

    for variable in env:
        assert variable in message


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, CRM_WEB_PORT="abc", CRM_SEGMENTS="1")

    assert "CRM_WEB_PORT=abc" in message
    assert "CRM_SEGMENTS=1" in message


def test_the_readme_example_message_is_what_start_up_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = settings_error(monkeypatch, CRM_WEB_PORT="abc")

    assert message.startswith("invalid setting CRM_WEB_PORT=abc: Input should be a valid integer")


# --- secrets --------------------------------------------------------------------------------


def test_the_redis_password_is_not_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_REDIS_URL", f"redis://scorer:{PASSWORD}@cache:6379/0")

    settings = load_settings()

    assert settings.redis_url.get_secret_value() == f"redis://scorer:{PASSWORD}@cache:6379/0"
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert PASSWORD not in repr(settings.model_dump())


@pytest.mark.parametrize(
    "env",
    [
        {"CRM_REDIS_URL": f"http://scorer:{PASSWORD}@cache:6379/0"},
        {"CRM_REDIS_URL": f"redis://scorer:{PASSWORD}@cache:6379/0", "CRM_WEB_PORT": "abc"},
        {"CRM_REDIS_URL": f"redis://:{PASSWORD}@cache", "CRM_ALERTS_TOPIC": "crm.events"},
    ],
    ids=["bad-url", "other-bad-setting", "topic-clash"],
)
def test_the_redis_password_never_appears_in_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    message = settings_error(monkeypatch, **env)

    assert PASSWORD not in message


def test_a_bad_redis_url_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, CRM_REDIS_URL=f"http://u:{PASSWORD}@x")

    assert "CRM_REDIS_URL" in message
    assert PASSWORD not in message


def mounted_secret(directory: Path, values: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: each key a symlink into ``..data``."""
    data = directory / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    (directory / "..data").symlink_to(data.name)
    for name, value in values.items():
        (data / name).write_text(value + "\n")  # kubectl create secret --from-file keeps it
        (directory / name).symlink_to(f"..data/{name}")
    return directory


def test_secrets_are_read_from_a_mounted_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = mounted_secret(
        tmp_path / "secrets",
        {
            "CRM_BROKER_PASSWORD": PASSWORD,
            "CRM_REDIS_URL": f"redis://scorer:{PASSWORD}@cache:6379/0",
            "CRM_CHECKPOINT_KEY": "checkpoint-key-of-the-group",
        },
    )
    monkeypatch.setenv("CRM_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("CRM_BROKER_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CRM_BROKER_USERNAME", "scorer")

    settings = load_settings()

    assert settings.broker_password.get_secret_value() == PASSWORD
    assert settings.redis_url.get_secret_value() == f"redis://scorer:{PASSWORD}@cache:6379/0"
    assert settings.signing_key == b"checkpoint-key-of-the-group"
    assert PASSWORD not in repr(settings)


def test_a_variable_in_the_environment_wins_over_its_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = mounted_secret(tmp_path / "secrets", {"CRM_REDIS_URL": "redis://from-file:6379/0"})
    monkeypatch.setenv("CRM_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("CRM_REDIS_URL", "redis://from-env:6379/0")

    assert load_settings().redis_url.get_secret_value() == "redis://from-env:6379/0"


def test_a_missing_secrets_directory_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = settings_error(monkeypatch, CRM_SECRETS_DIR=str(tmp_path / "not-mounted"))

    assert (
        message == f"invalid setting CRM_SECRETS_DIR={tmp_path / 'not-mounted'}: no such directory"
    )


# --- the settings object --------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValidationError):
        settings.web_port = 1  # type: ignore[misc]
    assert settings.web_port == 6066


def test_scorer_config_carries_the_models_and_alert_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "CRM_CHURN_HORIZON_DAYS": "45",
        "CRM_CHURN_SAMPLE_INTERVAL_DAYS": "2",
        "CRM_CHURN_LEARNING_RATE": "0.01",
        "CRM_QUALITY_WINDOW": "500",
        "CRM_SEGMENTS": "4",
        "CRM_SEGMENT_CONFIRMATIONS": "5",
        "CRM_OUTLIER_MADS": "3.5",
        "CRM_SEGMENT_GROUP_SHARE": "0.01",
        "CRM_SEGMENT_GROUP_MADS": "2",
        "CRM_SEGMENT_GROUP_TIGHTNESS": "0.3",
        "CRM_TOP_K": "7",
        "CRM_ALLOW_REPURCHASE": "true",
        "CRM_RECOMMENDER_FACTORS": "8",
        "CRM_CHURN_ALERT_THRESHOLD": "0.55",
        "CRM_CHURN_ALERT_HYSTERESIS": "0.05",
        "CRM_CHURN_ALERT_MIN_LABELS": "50",
        "CRM_NEGATIVE_SENTIMENT_THRESHOLD": "-0.6",
        "CRM_VALUABLE_CUSTOMER_VALUE": "0.9",
        "CRM_ALERT_COOLDOWN_DAYS": "3",
        "CRM_SEGMENT_ALERT_COOLDOWN_DAYS": "14",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    config = load_settings().scorer_config()

    assert config.churn_horizon_days == 45.0
    assert config.churn_sample_interval_days == 2.0
    assert config.churn_learning_rate == 0.01
    assert config.quality_window == 500
    assert config.segments == 4
    assert config.segment_confirmations == 5
    assert config.outlier_mads == 3.5
    assert (config.segment_group_share, config.segment_group_mads) == (0.01, 2.0)
    assert config.segment_group_tightness == 0.3
    assert config.top_k == 7
    assert config.allow_repurchase is True
    assert config.recommender_factors == 8
    alerts = config.alerts
    assert alerts.churn_risk == 0.55
    assert alerts.churn_hysteresis == 0.05
    assert alerts.churn_min_labels == 50
    assert alerts.negative_sentiment == -0.6
    assert alerts.valuable_customer_value == 0.9
    assert alerts.cooldown_days == 3.0
    assert alerts.segment_cooldown_days == 14.0


def test_default_scorer_config_uses_the_default_thresholds() -> None:
    settings = load_settings()

    alerts = settings.scorer_config().alerts

    assert alerts.churn_risk == settings.churn_alert_threshold == 0.7
    assert alerts.churn_hysteresis == settings.churn_alert_hysteresis == 0.1
    assert alerts.churn_min_labels == settings.churn_alert_min_labels == 200
    assert alerts.negative_sentiment == settings.negative_sentiment_threshold == -0.3
    assert alerts.valuable_customer_value == settings.valuable_customer_value == 0.8


@pytest.mark.parametrize("value", ["inf", "1e12", "-1"])
def test_future_tolerance_is_bounded(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CRM_MAX_FUTURE_SECONDS", value)
    with pytest.raises(SettingsError, match="CRM_MAX_FUTURE_SECONDS"):
        load_settings()


def test_an_unknown_segment_model_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = settings_error(monkeypatch, CRM_SEGMENT_MODEL="hdbscan")

    assert message.startswith("invalid setting CRM_SEGMENT_MODEL=hdbscan:")
    assert "'kmeans' or 'density'" in message


def test_the_density_segmentation_and_its_knobs_reach_the_scorer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "CRM_SEGMENT_MODEL": "density",
        "CRM_DENSITY_RADIUS": "0.3",
        "CRM_DENSITY_MIN_SHARE": "0.01",
    }.items():
        monkeypatch.setenv(name, value)

    scorer = CustomerScorer(load_settings().scorer_config())

    assert isinstance(scorer.segmenter, DensitySegmenter)
    assert scorer.segmenter.clustering_threshold == 0.3
    assert scorer.segmenter.minimum_weight_share == 0.01
    assert settings_error(monkeypatch, CRM_DENSITY_RADIUS="0").startswith(
        "invalid setting CRM_DENSITY_RADIUS=0:"
    )


def test_a_replaced_setting_still_set_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CRM_OUTLIER_QUANTILE", "0.95")

    with caplog.at_level("WARNING", logger="streams.settings"):
        settings = load_settings()

    assert settings.outlier_mads == 2.5
    assert "CRM_OUTLIER_QUANTILE is no longer read; set CRM_OUTLIER_MADS instead" in caplog.text


def test_a_secret_file_that_cannot_be_read_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "CRM_REDIS_URL").write_bytes(b"\xff\xfe not text")

    message = settings_error(monkeypatch, CRM_SECRETS_DIR=str(secrets))

    assert message.startswith(
        f"invalid setting CRM_REDIS_URL: its file in CRM_SECRETS_DIR={secrets} cannot be read"
    )


def test_the_value_half_life_floor_is_the_models() -> None:
    from online_models.value import spend
    from streams import settings

    assert settings.MIN_VALUE_HALFLIFE_DAYS == spend.MIN_VALUE_HALFLIFE_DAYS
    with pytest.raises(ValueError, match="half_life_days"):
        spend.SpendModel(half_life_days=5.0)
    # At the floor, labels of the year 2100 still weigh a finite amount, with a forecast of e**30.
    model = spend.SpendModel(half_life_days=spend.MIN_VALUE_HALFLIFE_DAYS, warmup_labels=1)
    x = np.array([[30.0, 30.0]])
    model.learn_many(x, np.array([1e13]), np.array([4.1e9]), np.expm1(x[:, 1]))
    assert np.isfinite(model.predict_many(np.array([[5.0, 4.0]]))).all()


def test_ease_weights_too_big_for_a_model_record_stop_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRM_RECOMMEND_EASE_ITEMS", "20000")
    monkeypatch.setenv("CRM_RECOMMEND_EASE_NEIGHBORS", "100")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "CRM_RECOMMEND_EASE_ITEMS=20000" in message
    assert "CRM_RECOMMEND_EASE_NEIGHBORS=100" in message
    monkeypatch.setenv("CRM_RECOMMEND_EASE_NEIGHBORS", "20")
    config = load_settings().scorer_config()
    assert (config.ease_items, config.ease_neighbors) == (20000, 20)
    monkeypatch.setenv("CRM_RECOMMEND_EASE_ITEMS", "1")
    with pytest.raises(SettingsError, match="CRM_RECOMMEND_EASE_ITEMS=1"):
        load_settings()
