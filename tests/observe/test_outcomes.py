"""Outcomes in the store: answers written beside the request log, feedback parsed and
upserted, Parquet imports, and the join, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm
from sqlalchemy import Engine, func, select

from modelplane.errors import InvalidSpec, MalformedRequest
from modelplane.observe.outcome_report import outcomes_by_version
from modelplane.observe.outcomes import (
    MAX_PROBLEMS,
    Feedback,
    OutcomeStore,
    Stored,
    parse_feedback,
    trim_answers,
)
from modelplane.observe.predlog import write_predictions, write_requests
from modelplane.observe.records import LatencySplit, PredictionRecord
from modelplane.store.db import open_engine, read_session
from modelplane.store.schema import AnswerRow

T0 = 1_790_000_000.0
WEEK = 7 * 86400.0


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def answer(request_id: str, version: str, proba: list[float], *, at: float = T0,
           sets: tuple[str, ...] = (), brief: bool = True) -> PredictionRecord:  # fmt: skip
    p = np.asarray(proba)
    return PredictionRecord(
        request_id=request_id, at=at, endpoint="fraud-score", contract="fraud",
        contract_version=1, status=200, latency=LatencySplit(0.1, 0.1, 1.0, 1.2),
        model_version=version, route=version, route_kind="stable", brief=brief,
        outputs={"label": (p >= 0.5).astype(np.int64), "probabilities": np.c_[1 - p, p]},
        feature_sets=sets,
    )  # fmt: skip


def test_ten_thousand_late_out_of_order_labels_give_scikit_learns_metrics(engine: Engine) -> None:
    rng = np.random.default_rng(11)
    n = 10_000
    scores = 1 / (1 + np.exp(-2 * rng.normal(size=n)))
    labels = (rng.random(n) < scores).astype(float)
    versions = np.where(rng.random(n) < 0.5, "fraud:1", "fraud:2")
    sets = [("customers:1",) if i % 3 else ("customers:2",) for i in range(n)]
    records = [answer(f"r{i}", str(versions[i]), [float(scores[i])], at=T0 + i, sets=sets[i],
                      brief=i % 10 != 0) for i in range(n)]  # fmt: skip
    write_requests(engine, [r for r in records if r.brief])
    write_predictions(engine, [r for r in records if not r.brief])
    store = OutcomeStore(engine)
    order = list(range(n))
    random.Random(5).shuffle(order)
    # a wrong label first, corrected later; then everything, in shuffled batches, weeks late
    store.ingest("fraud-score", [Feedback("r0", 1 - labels[0])], now=T0 + WEEK)
    for start in range(0, n, 2500):
        chunk = [Feedback(f"r{i}", float(labels[i])) for i in order[start : start + 2500]]
        store.ingest("fraud-score", chunk, now=T0 + 3 * WEEK)
    store.ingest("fraud-score", [Feedback("never-answered", 1.0)])  # joins nothing

    report = outcomes_by_version(engine, "fraud-score")
    assert report.task == "classifier"
    assert report.score_output == "probabilities"
    for v in report.versions:
        mine = versions == v.version
        y, s = labels[mine], scores[mine]
        assert v.labelled_rows == v.answered_rows == int(mine.sum())
        assert v.coverage == 1.0
        assert v.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, s >= 0.5))
        assert v.metrics["auc"] == pytest.approx(skm.roc_auc_score(y, s))
        assert v.metrics["log_loss"] == pytest.approx(skm.log_loss(y, s))
        assert v.label_latency_p50_s is not None
        assert v.label_latency_p50_s > 2 * WEEK
        assert not v.estimate_parted
    by_set = {f.feature_set: f for f in report.feature_sets}
    in_two = np.array([s == ("customers:2",) for s in sets])
    assert by_set["customers:2"].labelled_rows == int(in_two.sum())
    assert by_set["customers:2"].metrics["auc"] == pytest.approx(
        skm.roc_auc_score(labels[in_two], scores[in_two])
    )
    assert [c.regressed for c in report.comparisons] == [False]


def test_parquet_import_is_checked_whole_then_stored(engine: Engine, tmp_path: Path) -> None:
    write_requests(engine, [answer(f"r{i}", "fraud:1", [0.7]) for i in range(3)])
    good = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["r0", "r1", "r2"], "label": [1, 0, None],
                             "revenue": [1.5, None, 2.0]}), good)  # fmt: skip
    stored = OutcomeStore(engine).import_parquet(good, "fraud-score")
    # three rows answered an outcome: two labels and two revenues, not "4 outcomes"
    assert stored == Stored(outcomes=3, labels=2, values=2)
    assert str(stored) == "3 outcomes (2 labels, 2 values)"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"request_id": ["r0", ""], "label": [1, 0]}), bad)
    with pytest.raises(InvalidSpec, match=r"rows\[1\]\.request_id"):
        OutcomeStore(engine).import_parquet(bad, "fraud-score")
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"id": ["r0"]}), missing)
    with pytest.raises(InvalidSpec, match="no request_id column"):
        OutcomeStore(engine).import_parquet(missing, "fraud-score")
    v = outcomes_by_version(engine, "fraud-score").versions[0]
    assert v.labelled_rows == 2
    assert v.business["revenue"]["sum"] == 3.5


def test_an_import_of_a_missing_file_says_it_does_not_exist(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=r"missing\.parquet does not exist") as caught:
        OutcomeStore(engine).import_parquet(tmp_path / "missing.parquet", "fraud-score")
    assert "as Parquet" not in caught.value.message


@pytest.mark.parametrize(
    ("ids", "kind"), [([1, 2], "int64"), ([1.0, 2.0], "double"), ([None, None], "null")]
)
def test_an_import_refuses_request_ids_that_are_not_strings(
    engine: Engine, tmp_path: Path, ids: list[object], kind: str
) -> None:
    """A column of 123 was stored as "123" (a float column as "1.0"): ids that joined
    nothing, silently."""
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ids, "label": [1, 0]}), path)
    with pytest.raises(InvalidSpec, match=f"column request_id is {kind}; request ids are strings"):
        OutcomeStore(engine).import_parquet(path, "fraud-score")
    assert OutcomeStore(engine).arrival("fraud-score")[0] == 0


def test_an_import_takes_dictionary_encoded_request_ids(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    ids = pa.array(["r0", "r1", "r0"]).dictionary_encode()
    pq.write_table(pa.table({"request_id": ids, "row": [0, 0, 1], "label": [1, 0, 1]}), path)
    assert OutcomeStore(engine).import_parquet(path, "fraud-score") == Stored(3, 3, 0)


def test_answers_are_kept_until_their_retention_ends(engine: Engine) -> None:
    write_requests(engine, [answer("old", "fraud:1", [0.3], at=T0),
                            answer("new", "fraud:1", [0.3], at=T0 + 100 * 86400)])  # fmt: skip
    # a fallback's answer or an error has no model answer: nothing to join
    write_requests(engine, [PredictionRecord("fb", T0, "fraud-score", "fraud", 1, 200,
                                             LatencySplit(0, 0, 0, 0))])  # fmt: skip
    assert trim_answers(engine, T0 + 90 * 86400) == 1
    with read_session(engine) as session:
        assert session.scalar(select(func.count()).select_from(AnswerRow)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"request_id": "", "label": 1}', "request_id"),
        (b'{"request_id": "a"}', "label"),
        (b'{"request_id": "a", "label": "yes"}', "label"),
        (b'{"request_id": "a", "label": 1, "row": -1}', "row"),
        (b'{"request_id": "a", "values": {"Revenue!": 1}}', "values.Revenue!"),
        (b'{"outcomes": [{"request_id": "a", "label": 1}, {"request_id": "b", "lable": 1}]}',
         "outcomes[1].lable"),
        (b'{"outcomes": []}', "outcomes"),
        (b'{"label": 1}', "request_id"),
        (b'{"request_id": 7, "label": 1}', "request_id"),
        (b'{"request_id": "a", "values": {"chargeback_usd": "x"}}', "values.chargeback_usd"),
        (b'{"request_id": "a", "label": 1, "row": 1.5}', "row"),
        (b'{"request_id": "a", "label": 1, "bogus": 2}', "bogus"),
        (b'{"outcomes": [{"request_id": "a", "values": [1]}]}', "outcomes[0].values"),
        (b'{"outcomes": [3]}', "outcomes[0]"),
        (b'{"outcomes": {"request_id": "a"}}', "outcomes"),
    ],
)  # fmt: skip
def test_bad_feedback_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_feedback(body)
    assert field in {d["field"] for d in caught.value.details}, caught.value.details


def test_a_label_that_is_not_a_number_is_refused_in_plain_words() -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_feedback(b'{"request_id": "a", "label": "yes"}')
    problem = "label must be a number (0/1 for a classifier) or null"
    assert caught.value.details == [{"field": "label", "problem": problem}]
    assert "Expected" not in caught.value.message


def test_every_bad_item_of_a_batch_is_named() -> None:
    body = (b'{"outcomes": [{"request_id": "a", "label": "yes"}, {"request_id": "b", "label": 1},'
            b' {"label": 0}, {"request_id": "", "label": 1}]}')  # fmt: skip
    with pytest.raises(InvalidSpec) as caught:
        parse_feedback(body)
    fields = [d["field"] for d in caught.value.details]
    assert fields == ["outcomes[0].label", "outcomes[2].request_id", "outcomes[3].request_id"]
    assert "outcomes[2].request_id" in caught.value.message


def test_a_refusal_names_the_first_bad_items_and_counts_the_rest() -> None:
    items = ",".join('{"request_id": "a", "label": "no"}' for _ in range(MAX_PROBLEMS + 5))
    with pytest.raises(InvalidSpec) as caught:
        parse_feedback(f'{{"outcomes": [{items}]}}'.encode())
    details = caught.value.details
    assert [d["field"] for d in details[:MAX_PROBLEMS]] == [
        f"outcomes[{i}].label" for i in range(MAX_PROBLEMS)
    ]
    assert details[MAX_PROBLEMS] == {"field": "body", "problem": "5 more problems not listed"}
    assert len(details) == MAX_PROBLEMS + 1


def test_feedback_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedRequest):
        parse_feedback(b"label=1")


@pytest.mark.parametrize(
    "body",
    [
        b'{"request_id": 5, "label": }',  # a bad field, then bad JSON
        b'{"outcomes": [{"request_id": 5}, {]}',
        b'{"request_id": "a", "label": 1e400}',  # past a float's range
    ],
)
def test_bad_json_after_a_bad_field_is_malformed_not_a_crash(body: bytes) -> None:
    with pytest.raises(MalformedRequest, match="not valid JSON"):
        parse_feedback(body)


def test_an_integer_no_float_holds_is_named() -> None:
    huge = b"1" + b"0" * 400
    with pytest.raises(InvalidSpec) as caught:
        parse_feedback(b'{"request_id": "a", "values": {"x": ' + huge + b"}}")
    assert caught.value.details == [{"field": "values.x", "problem": "must be a number"}]
    with pytest.raises(InvalidSpec, match="label"):
        parse_feedback(b'{"request_id": "a", "label": ' + huge + b"}")


def test_an_item_may_name_a_business_value_outcomes() -> None:
    one = parse_feedback(b'{"request_id": "abc", "values": {"outcomes": 1.0}}')
    assert one == [Feedback("abc", 1.0, "outcomes")]


def test_one_item_and_a_batch_parse_alike() -> None:
    one = parse_feedback(b'{"request_id": "a", "label": 1, "values": {"revenue": 2.5}}')
    assert sorted(one, key=lambda f: f.name) == [Feedback("a", 1.0), Feedback("a", 2.5, "revenue")]
    many = parse_feedback(b'{"outcomes": [{"request_id": "a", "label": 0, "row": 3}]}')
    assert many == [Feedback("a", 0.0, "label", 3)]
