"""Model checkpoints: a restored scorer continues exactly where the saved one was."""

from __future__ import annotations

import hashlib
import pickle
import random

import orjson
import pytest

from online_models.activity import Activity
from online_models.checkpoint import CheckpointError, dump_checkpoint, load_checkpoint
from online_models.engine import ScoringEngine
from online_models.scorer import CustomerScorer, ScorerConfig

T0 = 1_735_689_600.0


def events(seed: int, n: int, start: float = T0) -> list[tuple[str, Activity]]:
    rng = random.Random(seed)
    kinds = ["purchase", "purchase", "view", "cart_add", "feedback"]
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        time = start + i * 3_600.0
        if kind == "feedback":
            activity = Activity(kind, time, text=rng.choice(["great", "awful, slow"]), rating=3)
        elif kind == "purchase":
            item = f"sku-{rng.randrange(60)}"
            activity = Activity(kind, time, item_id=item, amount=rng.uniform(1, 90), quantity=1)
        else:
            activity = Activity(kind, time, item_id=f"sku-{rng.randrange(60)}")
        out.append((f"c-{rng.randrange(80)}", activity))
    return out


def trained(config: ScorerConfig | None = None) -> ScoringEngine:
    engine = ScoringEngine(CustomerScorer(config), {})
    for customer_id, activity in events(1, 3_000):
        engine.process(customer_id, activity)
    return engine


def scores(scorer: CustomerScorer, states: dict, stream: list[tuple[str, Activity]]) -> list:
    """Score ``stream`` on copies of ``states``: the models learn, the states are not shared."""
    states = pickle.loads(pickle.dumps(states))
    served = []
    for customer_id, activity in stream:
        outcome = scorer.score(customer_id, states.get(customer_id), activity)
        states[customer_id] = outcome.state
        served.append(outcome.score)
    return served


def test_a_restored_scorer_scores_and_learns_exactly_as_the_saved_one_would():
    live = trained()
    raw = dump_checkpoint(live.scorer, {0: 2_999}, created_at=T0)

    checkpoint = load_checkpoint(raw)
    fresh = CustomerScorer()
    checkpoint.restore_into(fresh)

    assert checkpoint.positions == {0: 2_999}
    assert checkpoint.events_learned == live.scorer.model_version_events == 3_000
    assert fresh.churn_model.weights() == live.scorer.churn_model.weights()
    assert len(fresh.churn_model.weights()) > 10
    later = events(2, 1_000, start=T0 + 3_000 * 3_600.0)
    assert scores(fresh, live.states, later) == scores(live.scorer, live.states, later)


def test_a_checkpoint_of_another_format_is_refused_whole():
    raw = dump_checkpoint(trained().scorer, {}, created_at=T0)
    header, payload = raw.split(b"\n", 1)
    other = orjson.loads(header) | {"format": 99, "scorer_version": "9.0"}

    with pytest.raises(CheckpointError, match=r"format 99 \(written by crm-scorer 9.0\)"):
        load_checkpoint(orjson.dumps(other) + b"\n" + payload)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[:-10], "truncated"),
        (lambda raw: raw[:-10] + bytes(10), "sha256"),
        (lambda raw: b"PK\x03\x04" + raw, "not a crm-scorer model checkpoint"),
        (lambda raw: b"", "not a crm-scorer model checkpoint"),
    ],
)
def test_a_damaged_checkpoint_is_refused(damage, reason):
    raw = dump_checkpoint(CustomerScorer(), {}, created_at=T0)

    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(damage(raw))


def test_with_a_key_only_checkpoints_signed_with_it_are_loaded():
    scorer = CustomerScorer()
    signed = dump_checkpoint(scorer, {}, created_at=T0, key=b"s3cret")

    assert load_checkpoint(signed, key=b"s3cret").format == 1
    with pytest.raises(CheckpointError, match="not signed with CRM_CHECKPOINT_KEY"):
        load_checkpoint(signed, key=b"other")
    with pytest.raises(CheckpointError, match="not signed with CRM_CHECKPOINT_KEY"):
        load_checkpoint(dump_checkpoint(scorer, {}, created_at=T0), key=b"s3cret")


def _with_payload(payload: bytes) -> bytes:
    """A checkpoint whose header is right for ``payload`` (as a forger would make it)."""
    raw = dump_checkpoint(CustomerScorer(), {}, created_at=T0)
    header = orjson.loads(raw.split(b"\n", 1)[0])
    header |= {"payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return orjson.dumps(header) + b"\n" + payload


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("posix", "system"),
        ("random", "_os.system"),  # a dotted name reaches any module another one imports
        ("online_models.checkpoint", "pickle.loads"),
        ("builtins", "getattr"),
        ("builtins", "eval"),
        ("numpy", "memmap"),  # a class, but one that writes files
        ("river.stream", "iter_csv"),  # a function, not a class
    ],
)
def test_a_pickle_naming_anything_but_model_classes_is_refused_unexecuted(module, name, tmp_path):
    marker = tmp_path / "pwned"
    payload = b"c%s\n%s\n(S'touch %s'\ntR." % (module.encode(), name.encode(), str(marker).encode())

    with pytest.raises(CheckpointError, match="which no crm-scorer model uses"):
        load_checkpoint(_with_payload(payload))
    assert not marker.exists()


def test_a_bound_method_other_than_a_random_draw_is_refused():
    evil = b"conline_models.checkpoint\n_bound_method\n(crandom\nRandom\n)RS'seed'\ntR."

    with pytest.raises(CheckpointError, match=r"the method Random.seed"):
        load_checkpoint(_with_payload(evil))


@pytest.mark.parametrize("kind", ["logistic", "hoeffding_tree"])
def test_every_model_kind_round_trips_through_the_restricted_unpickler(kind):
    live = trained(ScorerConfig(churn_model=kind))
    checkpoint = load_checkpoint(dump_checkpoint(live.scorer, {}, created_at=T0))
    fresh = CustomerScorer(ScorerConfig(churn_model=kind))
    checkpoint.restore_into(fresh)

    later = events(3, 300, start=T0 + 3_000 * 3_600.0)
    assert scores(fresh, live.states, later) == scores(live.scorer, live.states, later)


def test_models_shaped_by_other_settings_are_refused_naming_the_setting():
    checkpoint = load_checkpoint(dump_checkpoint(CustomerScorer(), {}, created_at=T0))
    scorer = CustomerScorer(ScorerConfig(segments=8))
    before = scorer.snapshot_models()

    with pytest.raises(CheckpointError, match="CRM_SEGMENTS=6, not 8"):
        checkpoint.restore_into(scorer)
    assert scorer.snapshot_models() == before


def test_the_store_keeps_the_newest_checkpoints_and_restores_the_latest(tmp_path):
    from streams.checkpoints import CheckpointStore

    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    assert store.load_latest() is None
    scorer = CustomerScorer()
    for n in range(4):
        store.save(dump_checkpoint(scorer, {0: n}, created_at=T0 + n), created_at=T0 + n)
    (tmp_path / "ckpt" / "models-999999999999999.ckpt.partial").write_bytes(b"torn")

    paths = store.paths()
    path, checkpoint = store.load_latest()

    assert len(paths) == 2 and path == paths[-1]
    assert checkpoint.positions == {0: 3}


def test_the_store_refuses_a_damaged_newest_checkpoint_naming_the_file(tmp_path):
    from streams.checkpoints import CheckpointStore

    store = CheckpointStore(tmp_path, keep=3)
    store.save(dump_checkpoint(CustomerScorer(), {}, created_at=T0), created_at=T0)
    newest = store.save(b"garbage\n", created_at=T0 + 1)

    with pytest.raises(CheckpointError, match=f"{newest}.*Move it out of CRM_CHECKPOINT_DIR"):
        store.load_latest()
