"""Outcomes in the state store: what was answered, the truth that came later, and the join.

Two tables (migration 0008). ``answers`` holds, per answered request, the endpoint, model
version, route, the feature-set versions the request-time join read and the outputs the
caller got, for every row; the prediction log's writer adds it in the same transaction as
the request log (:func:`insert_answers`), off the event loop, and keeps it for weeks
(:func:`trim_answers`), so a label that arrives late still joins: the join has no window,
only the answers' retention. ``outcomes`` holds one value per ``(endpoint, request id,
row, name)``: ``label`` is the ground truth, any other name a business outcome (revenue,
chargeback amount). A later value for the same key replaces the earlier one.

Feedback arrives through the gateway's ``POST /v1/endpoints/{e}:feedback``
(:func:`parse_feedback`, then :meth:`OutcomeStore.ingest`), or a Parquet file
(:meth:`OutcomeStore.import_parquet`). :meth:`OutcomeStore.joined` reads outcomes joined to
their answers; :mod:`.outcome_report` turns that into metrics per version.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import numpy as np
from sqlalchemy import Connection, Engine, Text, cast, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from modelplane.errors import InvalidSpec, MalformedRequest
from modelplane.observe.records import PredictionRecord
from modelplane.store.db import read_session, write_session
from modelplane.store.schema import AnswerRow, OutcomeRow

__all__ = [
    "LABEL",
    "MAX_FEEDBACK_ITEMS",
    "Feedback",
    "JoinedRow",
    "OutcomeStore",
    "Stored",
    "insert_answers",
    "parse_feedback",
    "trim_answers",
]

LABEL = "label"
"""The outcome name of ground truth; every other name is a business outcome."""
MAX_FEEDBACK_ITEMS = 10_000
"""Items in one feedback request at most; larger sets go through a Parquet import."""
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_IMPORT_BATCH = 5_000
MAX_PROBLEMS = 20
"""Bad fields named in one refusal at most (the first ones; a count says how many more)."""
_LABEL_PROBLEM = "label must be a number (0/1 for a classifier) or null"
_ITEM_FIELDS = ("request_id", "row", "label", "values")


# ---------------------------------------------------------------------- answers (writer)

_ANSWER_COLUMNS = ("request_id", "at", "endpoint", "model_version", "route", "route_kind",
                   "rows", "feature_sets", "outputs")  # fmt: skip
_JSON = msgspec.json.Encoder()


def _answer(record: PredictionRecord) -> tuple[Any, ...] | None:
    outputs = record.outputs
    if outputs is None or record.model_version is None:
        return None
    columns = {name: _json_column(array) for name, array in outputs.items()}
    rows = max((len(c) for c in columns.values()), default=0)
    sets = _JSON.encode(list(record.feature_sets)).decode() if record.feature_sets else None
    return (record.request_id, record.at, record.endpoint, record.model_version, record.route,
            record.route_kind, rows, sets, _JSON.encode(columns).decode())  # fmt: skip


def _json_column(array: Any) -> list[Any]:
    values = np.asarray(array)
    if values.ndim == 0:
        return [_plain(values.item())]
    if values.dtype.kind in "OSU":
        return [_plain(v) for v in values.tolist()]
    listed: list[Any] = values.tolist()
    return listed


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def insert_answers(connection: Connection, records: Iterable[PredictionRecord]) -> int:
    """Insert the answers of ``records`` (those a model answered) on ``connection``, inside
    the caller's transaction; rows go to the driver's ``executemany`` as plain tuples, as
    the request log's do (ORM parameters cost several times the insert)."""
    rows = [row for row in map(_answer, records) if row is not None]
    if not rows:
        return 0
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO answers ({', '.join(_ANSWER_COLUMNS)})"
        f" VALUES ({', '.join([marker] * len(_ANSWER_COLUMNS))})"
    )
    connection.exec_driver_sql(sql, rows)
    return len(rows)


def trim_answers(engine: Engine, before: float) -> int:
    """Delete answers sent before ``before`` (Unix seconds): their outcomes no longer join."""
    with write_session(engine) as session:
        result = session.execute(delete(AnswerRow).where(AnswerRow.at < before))
        return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------------- feedback


@dataclass(frozen=True, slots=True)
class Feedback:
    """One outcome of one answered row."""

    request_id: str
    value: float
    name: str = LABEL
    row: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """What a feedback call or import stored: ``outcomes`` is answered rows (request id and
    row) given an outcome; each carries a ``label``, business ``values``, or both."""

    outcomes: int
    labels: int
    values: int

    @classmethod
    def of(cls, items: Iterable[Feedback]) -> Stored:
        """The tally of ``items`` as :meth:`OutcomeStore.ingest` stores them (a later value
        for the same key replaces an earlier one)."""
        keys = {(f.request_id, f.row, f.name) for f in items}
        labels = sum(1 for _, _, name in keys if name == LABEL)
        rows = len({(request_id, row) for request_id, row, _ in keys})
        return cls(rows, labels, len(keys) - labels)

    def __str__(self) -> str:
        plural = "" if self.outcomes == 1 else "s"
        return (f"{self.outcomes} outcome{plural} ({self.labels} label"
                f"{'' if self.labels == 1 else 's'}, {self.values} value"
                f"{'' if self.values == 1 else 's'})")  # fmt: skip


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    row: int = 0
    label: float | None = None
    values: dict[str, float] | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    outcomes: list[_Item]


_ONE = msgspec.json.Decoder(_Item)
_MANY = msgspec.json.Decoder(_Batch)


def parse_feedback(body: bytes) -> list[Feedback]:
    """Feedback from a JSON body: one item ``{"request_id", "row"?, "label"?, "values"?}``
    or a batch ``{"outcomes": [item, ...]}``. ``label`` is the ground truth (a number; 0/1
    for a binary classifier), ``values`` named business outcomes. Every bad field is named
    (``outcomes[3].label``, up to :data:`MAX_PROBLEMS`); nothing of a bad request is
    stored."""
    batch = _BATCH.match(bytes(body)) is not None
    try:
        items = _MANY.decode(body).outcomes if batch else [_ONE.decode(body)]
    except msgspec.ValidationError as exc:
        # the typed decoder stops at the first bad field: read the body again, loosely, to
        # name every bad field in words a caller reads (not the decoder's type names)
        try:
            problems = _explain(msgspec.json.decode(body), batch)
        except msgspec.DecodeError as late:  # bad JSON after the first bad field
            _malformed(late)
        except msgspec.ValidationError:  # a number past a float's range, and the like
            problems = []
        if not problems:
            problems = [{"field": _path(exc), "problem": str(exc)}]
        _refuse(problems)
    except msgspec.DecodeError as exc:
        _malformed(exc)
    prefix = "outcomes" if batch else ""
    return check_feedback(items, prefix)


def _malformed(exc: Exception) -> NoReturn:
    raise MalformedRequest(
        f"the feedback body is not valid JSON: {exc}",
        details=[{"field": "body", "problem": str(exc)}],
    ) from None


def _path(exc: Exception) -> str:
    problem, sep, path = str(exc).rpartition(" - at `")
    if not sep:
        problem, path = str(exc), ""
    path = path.rstrip("`").removeprefix("$").removeprefix(".")
    if "field `" in problem:
        field = problem.split("field `", 1)[1].split("`", 1)[0]
        path = f"{path}.{field}" if path else field
    return path or "body"


def _refuse(problems: list[dict[str, str]]) -> NoReturn:
    """Refuse feedback naming its first :data:`MAX_PROBLEMS` bad fields."""
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        shown = [*shown, {"field": "body", "problem": f"{more} more problems not listed"}]
    listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
    if len(problems) > 5:
        listed += f"; and {len(problems) - 5} more"
    raise InvalidSpec(f"invalid feedback: {listed}", details=shown)


def _explain(raw: Any, batch: bool) -> list[dict[str, str]]:
    """Every bad field of a feedback body the typed decoder refused, then every problem
    :func:`check_feedback` would find in the items that did decode."""
    problems: list[dict[str, str]] = []
    if not batch:
        item = _loose_item(raw, "", problems)
        if item is not None:
            _item_feedback(item, "", problems)
        return problems
    if not isinstance(raw, dict):  # pragma: no cover - batch means it starts with "{"
        return [{"field": "body", "problem": "must be an object"}]
    for key in raw:
        if key != "outcomes":
            problems.append({"field": str(key), "problem": "unknown field (only outcomes)"})
    listed = raw.get("outcomes")
    if not isinstance(listed, list):
        problems.append({"field": "outcomes", "problem": "must be a list of outcomes"})
        return problems
    for i, entry in enumerate(listed):
        at = f"outcomes[{i}]."
        item = _loose_item(entry, at, problems)
        if item is not None:
            _item_feedback(item, at, problems)
    return problems


def _loose_item(raw: Any, at: str, problems: list[dict[str, str]]) -> _Item | None:
    """``raw`` as an item, or ``None`` with each of its bad fields added to ``problems``."""
    if not isinstance(raw, dict):
        where = at.removesuffix(".") or "body"
        problems.append({"field": where, "problem": "must be an object"})
        return None
    found = len(problems)
    known = f"unknown field (known: {', '.join(_ITEM_FIELDS)})"
    problems.extend({"field": f"{at}{key}", "problem": known} for key in raw
                    if key not in _ITEM_FIELDS)  # fmt: skip
    request_id = raw.get("request_id")
    if not isinstance(request_id, str):
        why = "missing" if request_id is None else "must be a string"
        problems.append({"field": f"{at}request_id", "problem": why})
        request_id = ""
    row = raw.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int):
        problems.append({"field": f"{at}row", "problem": "must be a whole number"})
    label = raw.get("label")
    if label is not None and not _is_number(label):
        problems.append({"field": f"{at}label", "problem": _LABEL_PROBLEM})
    values = raw.get("values")
    if values is not None and not isinstance(values, dict):
        problems.append({"field": f"{at}values", "problem": "must be an object of numbers"})
    for name, value in (values or {}).items() if isinstance(values, dict) else ():
        if not _is_number(value):
            problems.append({"field": f"{at}values.{name}", "problem": "must be a number"})
    if len(problems) > found:
        return None
    return _Item(request_id, row, None if label is None else float(label),
                 None if values is None else {k: float(v) for k, v in values.items()})  # fmt: skip


def _is_number(value: Any) -> bool:
    """A JSON number a float holds (an integer of 400 digits is not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return True
    return isinstance(value, int) and abs(value) <= _LARGEST_FLOAT


_LARGEST_FLOAT = int(sys.float_info.max)
_BATCH = re.compile(rb'\s*\{\s*"outcomes"\s*:')
"""A batch's first key is ``outcomes`` (an item may name a business value so)."""


def check_feedback(items: Sequence[_Item], prefix: str = "outcomes") -> list[Feedback]:
    if not items:
        raise InvalidSpec("no outcomes given", details=[{"field": prefix or "body",
                                                         "problem": "empty"}])  # fmt: skip
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise InvalidSpec(
            f"{len(items)} outcomes in one request; at most {MAX_FEEDBACK_ITEMS}"
            " (import larger sets from Parquet: modelplane feedback import)",
            details=[{"field": prefix or "body", "problem": "too many items"}],
        )
    problems: list[dict[str, str]] = []
    out: list[Feedback] = []
    for i, item in enumerate(items):
        at = f"{prefix}[{i}]." if prefix else ""
        out.extend(_item_feedback(item, at, problems))
    if problems:
        _refuse(problems)
    return out


def _item_feedback(item: _Item, at: str, problems: list[dict[str, str]]) -> list[Feedback]:
    if not item.request_id or len(item.request_id) > 200:
        problems.append({"field": f"{at}request_id", "problem": "must be 1 to 200 characters"})
    if item.row < 0:
        problems.append({"field": f"{at}row", "problem": f"{item.row} is negative"})
    values = dict(item.values or {})
    if item.label is not None:
        values[LABEL] = item.label
    if not values:
        problems.append({"field": f"{at}label", "problem": "give a label or values"})
    for name, value in values.items():
        field = f"{at}label" if name == LABEL and item.label is not None else f"{at}values.{name}"
        if not _NAME.fullmatch(name):
            problems.append({"field": field, "problem": "names are lower_snake_case, ≤63"})
        if not math.isfinite(value):
            problems.append({"field": field, "problem": f"{value} is not a finite number"})
    return [Feedback(item.request_id, float(v), n, item.row) for n, v in values.items()]


# ---------------------------------------------------------------------- the store


@dataclass(frozen=True, slots=True)
class JoinedRow:
    """One outcome joined to the answer it is about."""

    request_id: str
    row: int
    value: float
    model_version: str
    answered_at: float
    arrived_at: float
    feature_sets: tuple[str, ...]
    outputs: Mapping[str, Any]
    """The answer's outputs for this row only."""


class OutcomeStore:
    """Writes outcomes and reads them joined to answers (blocking: call from a thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ingest(
        self,
        endpoint: str,
        items: Sequence[Feedback],
        *,
        source: str = "api",
        now: float | None = None,
    ) -> int:
        """Store ``items`` in one transaction (a later value replaces an earlier one of the
        same key); returns how many were stored. Outcomes need no answer yet: they join
        whenever the answer is there."""
        if not items:
            return 0
        arrived = time.time() if now is None else now
        # one value per key and call: the last wins, as it would across calls
        latest = {(f.request_id, f.row, f.name): f for f in items}
        rows = [
            {"endpoint": endpoint, "request_id": f.request_id, "row": f.row, "name": f.name,
             "value": f.value, "arrived_at": arrived, "source": source}
            for f in latest.values()
        ]  # fmt: skip
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(OutcomeRow)
        upsert = statement.on_conflict_do_update(
            index_elements=["endpoint", "request_id", "row", "name"],
            set_={"value": statement.excluded.value, "arrived_at": statement.excluded.arrived_at,
                  "source": statement.excluded.source},
        )  # fmt: skip
        with write_session(self.engine) as session:
            session.execute(upsert, rows)
        return len(rows)

    def import_parquet(self, path: Path, endpoint: str, *, now: float | None = None) -> Stored:
        """Import a Parquet file: a ``request_id`` column (strings, as the gateway answered
        them), optional ``row`` and ``label``, and any other numeric column as a business
        outcome of that name. Checked whole before anything is stored; written in
        batches."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
            raise InvalidSpec("reading Parquet needs pyarrow: pip install pyarrow") from exc
        if not path.exists():
            raise InvalidSpec(
                f"{path} does not exist", details=[{"field": "file", "problem": "no such file"}]
            )
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise InvalidSpec(
                f"cannot read {path} as Parquet: {exc}",
                details=[{"field": "file", "problem": str(exc)}],
            ) from exc
        if "request_id" in table.column_names:
            kind = table.schema.field("request_id").type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                # converting would store "123" for 123, or "1.0" for a float column: ids
                # that match no answer and say nothing of why
                raise InvalidSpec(
                    f"{path}: column request_id is {kind}; request ids are strings (the"
                    " gateway's modelplane-request-id), write that column as strings",
                    details=[{"field": "request_id", "problem": f"column of {kind}, not strings"}],
                )
        items = _parquet_items(table.to_pydict(), str(path))
        feedback = check_feedback(items, "rows")
        for start in range(0, len(feedback), _IMPORT_BATCH):
            chunk = feedback[start : start + _IMPORT_BATCH]
            self.ingest(endpoint, chunk, source="import", now=now)
        return Stored.of(feedback)

    def has_answers(self, endpoint: str) -> bool:
        """Whether any answer of ``endpoint`` is kept."""
        query = select(AnswerRow.id).where(AnswerRow.endpoint == endpoint).limit(1)
        with read_session(self.engine) as session:
            return session.execute(query).first() is not None

    def ingest_many(self, endpoint: str, items: Sequence[Feedback], *, source: str) -> int:
        """:meth:`ingest` in batches (for callers with more than one request's worth)."""
        return sum(
            self.ingest(endpoint, items[i : i + _IMPORT_BATCH], source=source)
            for i in range(0, len(items), _IMPORT_BATCH)
        )

    def joined(
        self,
        endpoint: str,
        *,
        name: str = LABEL,
        versions: Sequence[str] | None = None,
        answered_since: float | None = None,
    ) -> list[JoinedRow]:
        """Outcomes ``name`` of ``endpoint`` joined to their answers (the latest answer of a
        request id, since callers may reuse ids); outcomes of rows not answered (or no
        longer kept) are left out."""
        query = (
            select(OutcomeRow.request_id, OutcomeRow.row, OutcomeRow.value,
                   OutcomeRow.arrived_at, AnswerRow.id, AnswerRow.model_version,
                   AnswerRow.at, _text(AnswerRow.feature_sets), _text(AnswerRow.outputs))
            .join(AnswerRow, (AnswerRow.endpoint == OutcomeRow.endpoint)
                  & (AnswerRow.request_id == OutcomeRow.request_id))
            .where(OutcomeRow.endpoint == endpoint, OutcomeRow.name == name)
        )  # fmt: skip
        if versions is not None:
            query = query.where(AnswerRow.model_version.in_(list(versions)))
        if answered_since is not None:
            query = query.where(AnswerRow.at >= answered_since)
        with read_session(self.engine) as session:
            found = session.execute(query).all()
        latest: dict[tuple[str, int], tuple[Any, ...]] = {}
        for hit in map(tuple, found):
            key = (hit[0], hit[1])
            kept = latest.get(key)
            if kept is None or hit[4] > kept[4]:
                latest[key] = hit
        return [row for hit in latest.values() if (row := _joined(hit)) is not None]

    def answered(
        self, endpoint: str, *, answered_since: float | None = None
    ) -> dict[str, tuple[int, float, float]]:
        """Per model version: rows answered, first and last answer time."""
        query = (
            select(AnswerRow.model_version, func.sum(AnswerRow.rows), func.min(AnswerRow.at),
                   func.max(AnswerRow.at))
            .where(AnswerRow.endpoint == endpoint)
            .group_by(AnswerRow.model_version)
        )  # fmt: skip
        if answered_since is not None:
            query = query.where(AnswerRow.at >= answered_since)
        with read_session(self.engine) as session:
            return {
                v: (int(n or 0), float(lo), float(hi)) for v, n, lo, hi in session.execute(query)
            }

    def recent_outputs(
        self, endpoint: str, version: str, limit: int
    ) -> Iterator[Mapping[str, Any]]:
        """Outputs of ``version``'s latest ``limit`` answers, one mapping per row."""
        query = (
            select(_text(AnswerRow.outputs))
            .where(AnswerRow.endpoint == endpoint, AnswerRow.model_version == version)
            .order_by(AnswerRow.id.desc())
            .limit(limit)
        )
        with read_session(self.engine) as session:
            found = [outputs for (outputs,) in session.execute(query)]
        for outputs in found:
            yield from _rows_of(_DECODE(outputs))

    def endpoints(self) -> list[str]:
        """Endpoints that have outcomes."""
        return sorted(self.arrivals())

    def arrival(self, endpoint: str) -> tuple[int, float]:
        """``endpoint``'s outcomes: how many, and when the latest arrived."""
        query = select(func.count(), func.max(OutcomeRow.arrived_at)).where(
            OutcomeRow.endpoint == endpoint
        )
        with read_session(self.engine) as session:
            count, latest = session.execute(query).one()
        return int(count), float(latest or 0.0)

    def arrivals(self) -> dict[str, tuple[int, float]]:
        """Per endpoint with outcomes: how many, and when the latest arrived (one index
        scan: what a reader checks before recomputing anything)."""
        query = select(OutcomeRow.endpoint, func.count(), func.max(OutcomeRow.arrived_at)).group_by(
            OutcomeRow.endpoint
        )
        with read_session(self.engine) as session:
            return {e: (int(n), float(at)) for e, n, at in session.execute(query).all()}


def _text(column: Any) -> Any:
    # JSON read as text and decoded by msgspec: several times faster than the driver's or
    # SQLAlchemy's json.loads, and the join reads every labelled answer
    return cast(column, Text).label(column.key)


_DECODE = msgspec.json.decode


def _rows_of(outputs: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    rows = max((len(v) for v in outputs.values()), default=0)
    for i in range(rows):
        yield {name: values[i] for name, values in outputs.items() if i < len(values)}


def _joined(hit: tuple[Any, ...]) -> JoinedRow | None:
    request_id, row, value, arrived_at, _, version, answered_at, sets, encoded = hit
    outputs: Mapping[str, Any] = _DECODE(encoded) if encoded else {}
    mine = {name: values[row] for name, values in outputs.items() if row < len(values)}
    if not mine:
        return None  # the outcome names a row the request did not have
    feature_sets = tuple(_DECODE(sets) or ()) if sets else ()
    return JoinedRow(request_id, int(row), float(value), version, float(answered_at),
                     float(arrived_at), feature_sets, mine)  # fmt: skip


def _parquet_items(columns: Mapping[str, list[Any]], where: str) -> list[_Item]:
    if "request_id" not in columns:
        raise InvalidSpec(
            f"{where} has no request_id column (found: {', '.join(columns) or 'none'})",
            details=[{"field": "request_id", "problem": "missing column"}],
        )
    ids = columns["request_id"]
    rows = columns.get("row") or [0] * len(ids)
    labels = columns.get(LABEL)
    others = {n: v for n, v in columns.items() if n not in ("request_id", "row", LABEL)}
    items = []
    for i, request_id in enumerate(ids):
        values = {n: _number(v[i], n, i) for n, v in others.items() if v[i] is not None}
        label = None if labels is None or labels[i] is None else _number(labels[i], LABEL, i)
        items.append(_Item(request_id or "", int(rows[i] or 0), label, values or None))
    return items


def _number(value: Any, column: str, index: int) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    raise InvalidSpec(
        f"rows[{index}].{column}: {value!r} is not a number",
        details=[{"field": f"rows[{index}].{column}", "problem": "not a number"}],
    )
