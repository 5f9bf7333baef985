"""The one settings object: every ``CRM_*`` environment variable, read once at start-up."""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import CrmScorerError

if TYPE_CHECKING:
    from online_models.scoring.scorer import ScorerConfig

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "child_environment", "load_settings"]

logger = logging.getLogger(__name__)

#: The value regression's shortest half-life but 0 (``online_models.value.spend``'s, which
#: this module does not import: settings load before the models).
MIN_VALUE_HALFLIFE_DAYS = 60.0

ENV_PREFIX = "CRM_"
Fraction = Field(ge=0.0, le=1.0)
# Never echoed back in an error message.
# Settings that were replaced: still set, they are named in a warning at start-up.
_RETIRED_SETTINGS = {"CRM_OUTLIER_QUANTILE": "CRM_OUTLIER_MADS"}
_SECRET_SETTINGS = frozenset(
    {"redis_url", "checkpoint_key", "broker_password", "pseudonym_key", "metrics_password"}
)


class SettingsError(CrmScorerError):
    """A setting has a value the scorer cannot start with."""


class Settings(BaseSettings):
    """Worker, demo and CLI settings; the environment variable is ``CRM_`` + the upper-case name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # Connections and topics
    broker: str = Field(
        "kafka://localhost:9092", description="Kafka bootstrap URL(s), ';'-separated."
    )
    broker_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    broker_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    broker_username: str = Field("", description="SASL user name.")
    broker_password: SecretStr = Field(SecretStr(""), description="SASL password.")
    broker_ca_file: Path | None = Field(
        None, description="CA bundle (PEM) the broker's certificate is checked against."
    )
    broker_cert_file: Path | None = Field(None, description="Client certificate (PEM), for mTLS.")
    broker_key_file: Path | None = Field(None, description="Client certificate's key (PEM).")
    redis_url: SecretStr = Field(SecretStr("redis://localhost:6379/0"), description="Redis URL.")
    app_id: str = Field("crm-scorer", min_length=1, description="Faust app id and consumer group.")
    events_topic: str = Field("crm.events", min_length=1, description="Topic the CRM produces to.")
    alerts_topic: str = Field("crm.alerts", min_length=1, description="Outbound alerts topic.")
    dlq_topic: str = Field("crm.events.dlq", min_length=1, description="Dead-letter topic.")
    audit_topic: str = Field(
        "crm.audit", min_length=1, description="Audit records of carried-out erasure requests."
    )
    items_topic: str = Field(
        "crm.items",
        min_length=1,
        description="Compacted topic of the product catalogue (key = item_id; a tombstone "
        "removes an item); every worker reads all of it.",
    )
    topic_partitions: int = Field(8, ge=1, le=10_000, description="Partitions of created topics.")
    topic_replication: int = Field(1, ge=1, le=10, description="Replication of created topics.")
    web_port: int = Field(
        6066, ge=1, le=65535, description="HTTP port serving /metrics, /livez and /readyz."
    )
    web_bind: str = Field("0.0.0.0", description="Interface the HTTP server binds to.")
    web_tls_cert_file: Path | None = Field(
        None, description="Certificate (PEM) the HTTP port serves TLS with; unset means plain HTTP."
    )
    web_tls_key_file: Path | None = Field(None, description="Key (PEM) of CRM_WEB_TLS_CERT_FILE.")
    metrics_username: str = Field(
        "", description="User name /metrics asks for with HTTP basic auth; empty means none."
    )
    metrics_password: SecretStr = Field(
        SecretStr(""), description="Password of CRM_METRICS_USERNAME."
    )
    redis_prefix: str = Field("crm:score:", min_length=1, description="Score hash key prefix.")
    pseudonym_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key: when set, customer ids are replaced by their keyed hash "
        "(hex) before state, models, Redis, alerts and logs.",
    )
    score_ttl_days: float = Field(
        0.0, ge=0.0, description="Expire score hashes after this many days (0 = never)."
    )
    store: str = Field(
        "memory://",
        description=(
            "Faust table store: memory:// (rebuilt from the changelog) or rocksdb:// "
            "(needs the RocksDB extra of faust-streaming)."
        ),
    )
    data_dir: Path = Field(Path(".crm-scorer"), description="Worker data directory.")
    secrets_dir: Path | None = Field(
        None,
        description="Directory of secret files, each named by its variable (CRM_BROKER_PASSWORD, "
        "CRM_REDIS_URL, CRM_CHECKPOINT_KEY, ...) and holding its value: a mounted Kubernetes "
        "Secret. A variable set in the environment wins over its file.",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Worker log lines: text, or json (one object per line)."
    )
    # Faust consumer group timing
    session_timeout: float = Field(30.0, gt=0, description="Consumer session timeout, seconds.")
    rebalance_timeout: float = Field(30.0, gt=0, description="Group rebalance timeout, seconds.")
    max_future_seconds: float = Field(
        3600.0,
        ge=0,
        le=315_360_000,
        description="Dead-letter events timestamped this far past the clock, s.",
    )
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=60_000,
        description="Longest a fetch waits for new events, ms (an idle worker's latency bound "
        "on brokers that do not answer a waiting fetch when events arrive).",
    )
    producer_batch_bytes: int = Field(
        16_384, ge=1, description="Kafka producer batch size per partition, bytes (1 on Tansu 0.6)."
    )
    producer_max_pending: int = Field(
        1_000,
        ge=1,
        description="Changelog, alert and dead-letter records waiting for the Kafka producer "
        "before the worker stops consuming until they drain.",
    )
    state_cache_customers: int = Field(
        10_000,
        ge=1,
        description="Customers' states kept decoded between batches (about 2.6 KB each); the "
        "changed ones are written to the changelog when they reach it, and after every batch.",
    )
    # Redis writer
    redis_batch_size: int = Field(500, ge=1, le=100_000, description="Scores per Redis pipeline.")
    redis_flush_ms: int = Field(50, ge=1, le=60_000, description="Longest wait before a flush, ms.")
    redis_max_pending: int = Field(
        100_000,
        ge=1,
        description="Scores Redis has not taken before the worker stops consuming until it does.",
    )
    # Models
    churn_horizon_days: float = Field(90.0, gt=0, description="Silence that counts as churn, days.")
    churn_sample_interval_days: float = Field(
        1.0, ge=0, description="Min event-time gap between churn training examples of one customer."
    )
    churn_learning_rate: float = Field(
        0.1, gt=0, le=10, description="AdaGrad learning rate of the churn model."
    )
    churn_model: Literal["logistic", "hoeffding_tree"] = Field(
        "logistic", description="Churn classifier: logistic regression or Hoeffding tree."
    )
    churn_silent_sample_days: float = Field(
        15.0, gt=0, description="Days of silence between churn examples of a silent customer."
    )
    rescore_interval_days: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Event-time days between re-scores of a silent customer.",
    )
    event_id_window: int = Field(
        32,
        ge=0,
        le=1000,
        description="Latest event ids kept per customer to recognise a redelivered event.",
    )
    checkpoint_key: SecretStr | None = Field(
        None,
        description="HMAC key: the group model's records are signed with it, and only records "
        "signed with it are trusted.",
    )
    model_sync_seconds: float = Field(
        15.0,
        ge=0.1,
        le=3600,
        description="Seconds between a worker's deltas to the group model, and between versions.",
    )
    model_updates_topic: str = Field(
        None,  # type: ignore[assignment]  # filled from CRM_APP_ID when unset
        min_length=1,
        description="Topic (1 partition) the workers send their model deltas to; unset means "
        "CRM_APP_ID-model-updates.",
    )
    models_topic: str = Field(
        None,  # type: ignore[assignment]  # filled from CRM_APP_ID when unset
        min_length=1,
        description="Compacted topic (1 partition) holding the group model's versions; unset "
        "means CRM_APP_ID-models.",
    )
    model_item_buckets: int = Field(
        64,
        ge=1,
        le=4096,
        description="Buckets the group model's items are published in (more for bigger "
        "catalogues: a bucket is one Kafka record).",
    )
    quality_window: int = Field(1000, ge=10, description="Labels in the rolling quality window.")
    segment_model: Literal["kmeans", "density"] = Field(
        "kmeans",
        description="Segmentation: kmeans (online k-means) or density (River's DBSTREAM: "
        "dense regions are segments, customers in none are unusual).",
    )
    segments: int = Field(6, ge=2, le=50, description="Number of customer segments (k-means).")
    segment_confirmations: int = Field(
        3,
        ge=1,
        le=100,
        description="Consecutive scores in a new segment before the customer moves there.",
    )
    outlier_mads: float = Field(
        2.5,
        ge=1.0,
        le=10.0,
        description="k-means: a customer whose distance to their segment (in units of its "
        "spread, over the segment features and the basket) is this many robust standard "
        "deviations (MAD x 1.4826) of everyone's log distances above the median is an outlier "
        "(segment_outlier).",
    )
    segment_group_share: float = Field(
        0.005,
        ge=0.0,
        le=0.5,
        description="k-means: when customers alike beyond the founders' fence (in one cell of "
        "0.25 on every feature and its neighbours) hold this share of the recent points' "
        "weight, sit tight among themselves and apart from every segment, the group's model "
        "makes them a segment of their own (at most 2); 0 turns group segments off; the "
        "default, 0.005, is the share measured on Online Retail.",
    )
    segment_group_mads: float = Field(
        1.5,
        ge=0.0,
        le=10.0,
        description="k-means: who may found a group segment: customers whose distance to their "
        "segment is this many robust standard deviations of everyone's log distances above "
        "the median (at least 1 standard deviation of their segment); a group's mean must be "
        "that far from every segment.",
    )
    segment_group_tightness: float = Field(
        0.5,
        gt=0.0,
        le=2.0,
        description="k-means: the most a group's standard deviation may be, as a share of its "
        "nearest segment's robust one (root mean square over the features): the tail of an "
        "ordinary segment spreads as wide as the segment, a group of alike customers does not.",
    )
    density_radius: float = Field(
        0.2,
        gt=0.0,
        le=2.0,
        description="density: how far a micro-cluster reaches on the segment features' scales "
        "(DBSTREAM's clustering threshold).",
    )
    density_min_share: float = Field(
        0.002,
        ge=0.0,
        lt=1.0,
        description="density: share of all the weight a micro-cluster needs to be dense.",
    )
    top_k: int = Field(10, ge=1, le=1000, description="Recommendations per customer.")
    rerank_silent_days: float = Field(
        7.0,
        ge=0,
        le=365,
        description="Event-time days a silent customer's re-scores serve the list ranked at "
        "their latest event or ranking (sooner when an item in it is withdrawn); 0 ranks at "
        "every score.",
    )
    allow_repurchase: bool = Field(
        False, description="Recommend items the customer already bought."
    )
    recommender_factors: int = Field(
        16, ge=1, le=512, description="Latent factors of the recommender."
    )
    content_weight: float = Field(
        4.0,
        ge=0.0,
        le=100.0,
        description="Weight of catalogue content similarity in the recommendations (factors "
        "2.0, popularity 0.3, co-purchase 4.0; 0 = no content signal).",
    )
    recommend_ease_items: int = Field(
        4000,
        ge=0,
        le=20_000,
        description="EASE is fitted over this many of the most owned items (the Gram matrix: "
        "4 x n^2 bytes kept and 8 x n^2 during a refit in the merging worker, n^3 time per "
        "refit); 0 = no EASE.",
    )
    recommend_ease_strength: float = Field(
        500.0,
        gt=0,
        le=1e6,
        description="EASE's L2 strength (lambda), in customers.",
    )
    recommend_ease_neighbors: int = Field(
        50,
        ge=1,
        le=1000,
        description="EASE weights kept per item (its strongest positive ones).",
    )
    recommend_ease_refit_days: float = Field(
        1.0,
        gt=0,
        le=365,
        description="EASE is refitted this often, in event-time days of the counts.",
    )
    recommend_catalogue_only: bool = Field(
        True,
        description="Once the catalogue holds items, recommend only items it holds (unavailable "
        "or removed ones are never recommended either way).",
    )
    clv_horizon_days: float = Field(
        365.0, gt=0, le=3650, description="Days of spend predicted_clv covers."
    )
    value_sample_days: float = Field(
        7.0,
        ge=1,
        le=365,
        description="A customer who ordered leaves a value example (labelled with the net "
        "spend over the churn horizon that follows) at most this often, in event-time days.",
    )
    value_halflife_days: float = Field(
        180.0,
        ge=0,
        le=3650,
        description="Event-time days in which a value label loses half its weight (0: never).",
    )
    value_ridge: float = Field(
        1.0,
        ge=0,
        description="Ridge penalty of the value regression's standardised weights, in labels.",
    )
    value_warmup_labels: int = Field(
        500,
        ge=0,
        description="Labels the value regression learns before predicted_clv is its forecast "
        "(BG/NBD + Gamma-Gamma's before).",
    )
    churn_logistic_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the logistic model in the served churn risk; the rest is "
        "BG/NBD's chance of no order within the horizon (1 = the logistic model alone).",
    )
    # Alerts
    churn_alert_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="Churn risk that raises an alert."
    )
    churn_alert_hysteresis: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Risk must fall this far below the threshold before a new alert.",
    )
    churn_alert_min_labels: int = Field(
        200, ge=0, description="Labels the churn model needs before it may alert."
    )
    value_at_risk_threshold: float = Field(
        300.0,
        ge=0,
        description="Value at risk (churn risk x predicted CLV, in the events' currency) from "
        "which a churn-risk alert fires.",
    )
    negative_sentiment_threshold: float = Field(
        -0.3, ge=-1.0, le=1.0, description="Feedback tone at or below this is negative."
    )
    valuable_customer_value: float = Field(
        0.8, ge=0.0, le=1.0, description="Value score from which a customer counts as top-value."
    )
    alert_cooldown_days: float = Field(
        7.0,
        ge=0,
        description="Event-time days between two churn or feedback alerts of one customer.",
    )
    segment_alert_min_orders: int = Field(
        2, ge=0, description="Orders a customer needs before a segment change alerts."
    )
    segment_alert_warmup: int = Field(
        500, ge=0, description="Points the segmenter must learn before segment changes alert."
    )
    segment_alert_cooldown_days: float = Field(
        30.0, ge=0, description="Event-time days between two segment-change alerts of one customer."
    )
    segment_alert_on_silence: bool = Field(
        False,
        description="Alert also when silence alone moves a customer into or between lapsing, "
        "hibernating and lost.",
    )
    unusual_customer_alert: bool = Field(
        True,
        description="Alert when a customer becomes an outlier (segment_outlier); false turns "
        "unusual_customer alerts off.",
    )

    @model_validator(mode="before")
    @classmethod
    def _group_model_topics(cls, data: Any) -> Any:
        # A consumer group's model is its own: two app ids never share these topics.
        if isinstance(data, dict):
            app_id = data.get("app_id") or cls.model_fields["app_id"].default
            if data.get("model_updates_topic") is None:
                data = {**data, "model_updates_topic": f"{app_id}-model-updates"}
            if data.get("models_topic") is None:
                data = {**data, "models_topic": f"{app_id}-models"}
        return data

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        for url in value.split(";"):
            if not url.startswith("kafka://") or len(url) <= len("kafka://"):
                msg = f"{url!r} must look like kafka://host:port"
                raise ValueError(msg)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            msg = "must start with redis://, rediss:// or unix://"
            raise ValueError(msg)
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://", "aerospike://")):
            msg = f"{value!r} is not a Faust store (memory:// or rocksdb://)"
            raise ValueError(msg)
        return value

    @field_validator("secrets_dir")
    @classmethod
    def _secrets_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            msg = "no such directory"
            raise ValueError(msg)
        return value

    @field_validator("value_halflife_days")
    @classmethod
    def _value_halflife(cls, value: float) -> float:
        if 0 < value < MIN_VALUE_HALFLIFE_DAYS:
            msg = (
                f"must be 0 (no decay) or at least {MIN_VALUE_HALFLIFE_DAYS:g} days: label "
                "weights grow as 2 ** (epoch time / half-life) and shorter ones overflow"
            )
            raise ValueError(msg)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error", "critical"}:
            msg = f"{value!r} is not one of debug, info, warning, error, critical"
            raise ValueError(msg)
        return value.lower()

    @field_validator("pseudonym_key")
    @classmethod
    def _pseudonym_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            msg = "must be at least 16 characters"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _broker_security(self) -> Settings:
        if self.broker_security_protocol.startswith("SASL_") and not (
            self.broker_username and self.broker_password.get_secret_value()
        ):
            msg = (
                f"CRM_BROKER_SECURITY_PROTOCOL={self.broker_security_protocol} needs "
                "CRM_BROKER_USERNAME and CRM_BROKER_PASSWORD"
            )
            raise ValueError(msg)
        for name in ("broker_ca_file", "broker_cert_file", "broker_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                msg = f"CRM_{name.upper()}={path}: no such file"
                raise ValueError(msg)
        if (self.broker_cert_file is None) != (self.broker_key_file is None):
            msg = "CRM_BROKER_CERT_FILE and CRM_BROKER_KEY_FILE go together"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _web_security(self) -> Settings:
        if bool(self.metrics_username) != bool(self.metrics_password.get_secret_value()):
            msg = "CRM_METRICS_USERNAME and CRM_METRICS_PASSWORD go together"
            raise ValueError(msg)
        if ":" in self.metrics_username:
            msg = f"CRM_METRICS_USERNAME={self.metrics_username}: basic auth forbids ':' in it"
            raise ValueError(msg)
        cert, key = self.web_tls_cert_file, self.web_tls_key_file
        if (cert is None) != (key is None):
            msg = "CRM_WEB_TLS_CERT_FILE and CRM_WEB_TLS_KEY_FILE go together"
            raise ValueError(msg)
        if cert is not None and key is not None:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                msg = (
                    f"CRM_WEB_TLS_CERT_FILE={cert} with CRM_WEB_TLS_KEY_FILE={key} cannot be "
                    f"loaded: {exc}"
                )
                raise ValueError(msg) from None
        return self

    @model_validator(mode="after")
    def _ease_fits_a_record(self) -> Settings:
        from schemas.model_records import MODEL_RECORD_BYTES

        # Each weight travels as an 8-byte item hash and a 4-byte weight, in one record.
        if self.recommend_ease_items == 1:
            msg = "CRM_RECOMMEND_EASE_ITEMS=1: EASE needs at least 2 items (0 turns it off)"
            raise ValueError(msg)
        size = 12 * self.recommend_ease_items * self.recommend_ease_neighbors
        if size > MODEL_RECORD_BYTES * 0.9:
            msg = (
                f"CRM_RECOMMEND_EASE_ITEMS={self.recommend_ease_items} with "
                f"CRM_RECOMMEND_EASE_NEIGHBORS={self.recommend_ease_neighbors} makes EASE "
                f"weights of up to {size:,} bytes, over a model record ({MODEL_RECORD_BYTES:,})"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _distinct_topics(self) -> Settings:
        topics = {**self.topics, **self.model_topics, "CRM_ITEMS_TOPIC": self.items_topic}
        if len(set(topics.values())) != len(topics):
            given = ", ".join(f"{name}={topic}" for name, topic in topics.items())
            msg = f"the scorer's topics must differ ({given})"
            raise ValueError(msg)
        return self

    @property
    def topics(self) -> dict[str, str]:
        """The scorer's topics of customer data, by the variable naming each: events, alerts,
        dead letters and audit records (``CRM_TOPIC_PARTITIONS`` partitions each)."""
        return {
            "CRM_EVENTS_TOPIC": self.events_topic,
            "CRM_ALERTS_TOPIC": self.alerts_topic,
            "CRM_DLQ_TOPIC": self.dlq_topic,
            "CRM_AUDIT_TOPIC": self.audit_topic,
        }

    @property
    def model_topics(self) -> dict[str, str]:
        """The group model's topics (one partition each): deltas in, versions out."""
        return {
            "CRM_MODEL_UPDATES_TOPIC": self.model_updates_topic,
            "CRM_MODELS_TOPIC": self.models_topic,
        }

    @property
    def signing_key(self) -> bytes | None:
        """The HMAC key of the group model's records (``CRM_CHECKPOINT_KEY``), if set."""
        key = self.checkpoint_key
        return None if key is None else key.get_secret_value().encode("utf-8")

    @property
    def broker_hosts(self) -> list[str]:
        """``host:port`` of each bootstrap broker, for plain Kafka clients."""
        return [url.removeprefix("kafka://") for url in self.broker.split(";")]

    def as_environment(self) -> dict[str, str]:
        """These settings as ``CRM_*`` variables (secrets included), for a child process."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue  # unset optional: the child takes the same default
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    def scorer_config(self) -> ScorerConfig:
        """The models' hyperparameters and alert thresholds."""
        # Imported here: the models take a second to import, which a command that scores
        # nothing (help, schema, replay, forget) need not pay.
        from online_models.scoring.alert_policy import AlertThresholds
        from online_models.scoring.scorer import ScorerConfig

        return ScorerConfig(
            churn_horizon_days=self.churn_horizon_days,
            churn_sample_interval_days=self.churn_sample_interval_days,
            churn_learning_rate=self.churn_learning_rate,
            churn_model=self.churn_model,
            churn_silent_sample_days=self.churn_silent_sample_days,
            rescore_interval_days=self.rescore_interval_days,
            quality_window=self.quality_window,
            segment_model=self.segment_model,
            segments=self.segments,
            density_radius=self.density_radius,
            density_min_share=self.density_min_share,
            segment_confirmations=self.segment_confirmations,
            outlier_mads=self.outlier_mads,
            segment_group_share=self.segment_group_share,
            segment_group_mads=self.segment_group_mads,
            segment_group_tightness=self.segment_group_tightness,
            top_k=self.top_k,
            rerank_silent_days=self.rerank_silent_days,
            allow_repurchase=self.allow_repurchase,
            recommender_factors=self.recommender_factors,
            item_buckets=self.model_item_buckets,
            clv_horizon_days=self.clv_horizon_days,
            value_sample_days=self.value_sample_days,
            value_halflife_days=self.value_halflife_days,
            value_ridge=self.value_ridge,
            value_warmup_labels=self.value_warmup_labels,
            churn_logistic_weight=self.churn_logistic_weight,
            content_weight=self.content_weight,
            ease_items=self.recommend_ease_items,
            ease_strength=self.recommend_ease_strength,
            ease_neighbors=self.recommend_ease_neighbors,
            ease_refit_days=self.recommend_ease_refit_days,
            recommend_catalogue_only=self.recommend_catalogue_only,
            alerts=AlertThresholds(
                churn_risk=self.churn_alert_threshold,
                churn_hysteresis=self.churn_alert_hysteresis,
                churn_min_labels=self.churn_alert_min_labels,
                value_at_risk=self.value_at_risk_threshold,
                negative_sentiment=self.negative_sentiment_threshold,
                valuable_customer_value=self.valuable_customer_value,
                cooldown_days=self.alert_cooldown_days,
                segment_cooldown_days=self.segment_alert_cooldown_days,
                segment_min_orders=self.segment_alert_min_orders,
                segment_warmup=self.segment_alert_warmup,
                segment_alert_on_silence=self.segment_alert_on_silence,
                unusual_customer=self.unusual_customer_alert,
            ),
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, or stop with a message naming each bad setting.

    >>> try:
    ...     load_settings(web_port=0)
    ... except SettingsError as exc:
    ...     print(exc)
    invalid setting CRM_WEB_PORT=0: Input should be greater than or equal to 1
    """
    for retired, successor in _RETIRED_SETTINGS.items():
        if retired in os.environ:
            logger.warning("%s is no longer read; set %s instead", retired, successor)
    secrets_dir = overrides.get("secrets_dir") or os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
    # A missing directory is named by the field's own check, not pydantic-settings' warning.
    readable = secrets_dir is not None and Path(secrets_dir).is_dir()
    try:
        # pydantic-settings' init argument; its plugin-less stubs do not declare it.
        return Settings(_secrets_dir=secrets_dir if readable else None, **overrides)  # type: ignore[call-arg]
    except pydantic_settings.SettingsError as exc:
        # A secret file that cannot be read (permissions, not text): named by its variable.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"CRM_{field[1].upper()}" if field else "a CRM_* setting"
        msg = f"invalid setting {name}: its file in CRM_SECRETS_DIR={secrets_dir} cannot be read"
        raise SettingsError(f"{msg} ({exc.__cause__ or exc})") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            label = f"CRM_{name.upper()}" if name else "CRM_* settings"
            value = error.get("input")
            secret = name in _SECRET_SETTINGS or isinstance(value, dict)
            shown = "" if secret else f"={value}"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"invalid setting {label}{shown}: {message}")
        raise SettingsError("; ".join(problems)) from None


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with its ``CRM_*`` variables replaced by ``settings``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**inherited, **settings.as_environment()}
