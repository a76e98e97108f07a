"""The request-time feature join: entity keys in, the model's feature columns out.

An endpoint binds feature sets (:class:`~modelplane.spec.endpoint.FeatureBinding`). For
each binding, every key of the batch is read in one call to the online store, off the
event loop (the stores are synchronous), then :func:`~modelplane.features.apply_policy`
decides what stale or missing values become. Columns the request already carries win and
are not read at all. Joined columns take the contract's dtypes, so the contract check that
follows sees exactly what the model will.

Compiled once per endpoint (:func:`compile_join`); endpoints without bindings get ``None``
and the handler never calls into this module for them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.dataplane.metrics import FeatureMetrics
from modelplane.dataplane.records import RecordsCodec
from modelplane.errors import ContractViolation, InvalidSpec, StoreUnavailable
from modelplane.features.base import EntityKey, Lookup, OnlineStore
from modelplane.features.freshness import (
    FeaturesUnavailable,
    JoinResult,
    Policy,
    State,
    ValueCheck,
    apply_policy,
)
from modelplane.observe.records import FeatureEvidence, RequestTrace
from modelplane.spec.dtypes import DType
from modelplane.spec.endpoint import Endpoint, FeatureBinding
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.fields import FieldSpec

__all__ = ["DEFAULTED_HEADER", "FeatureJoin", "compile_join"]

Array = npt.NDArray[Any]
Arrays = dict[str, Array]

DEFAULTED_HEADER = b"modelplane-features-defaulted"
"""Response header naming the features answered with their declared default."""


@dataclass(frozen=True, slots=True)
class _Bound:
    """One binding, resolved: its feature set, policy, and the contract field per feature."""

    binding: FeatureBinding
    featureset: FeatureSet
    policy: Policy
    fields: Mapping[str, FieldSpec]


@dataclass(frozen=True, slots=True)
class _Joined:
    columns: Arrays
    ages: dict[str, float | None]
    defaulted: tuple[str, ...]
    from_request: tuple[str, ...]
    unavailable: FeaturesUnavailable | None = None


_NOTHING = _Joined({}, {}, (), ())


def compile_join(
    endpoint: Endpoint, featuresets: Mapping[str, FeatureSet], metrics: FeatureMetrics
) -> FeatureJoin | None:
    """The endpoint's join, or ``None`` when it binds no feature set; InvalidSpec names a
    binding whose set was not resolved or whose features the set or contract lacks."""
    if not endpoint.features:
        return None
    inputs = {field.name: field for field in endpoint.contract.inputs}
    bound = [_bind(endpoint.name, b, featuresets, inputs) for b in endpoint.features]
    return FeatureJoin(endpoint, bound, dict(featuresets), metrics)


def _bind(
    endpoint: str,
    binding: FeatureBinding,
    featuresets: Mapping[str, FeatureSet],
    inputs: Mapping[str, FieldSpec],
) -> _Bound:
    where = f"endpoint '{endpoint}': features {binding.feature_set}"
    featureset = featuresets.get(binding.feature_set)
    if featureset is None or featureset.ref != binding.feature_set:
        raise InvalidSpec(f"{where}: the feature set was not resolved (apply it first)")
    names = binding.features or tuple(n for n in featureset.feature_names if n in inputs)
    unknown = [name for name in names if featureset.feature(name) is None]
    if unknown:
        raise InvalidSpec(f"{where}: the set has no feature {', '.join(map(repr, unknown))}")
    if not names:
        raise InvalidSpec(f"{where}: none of its features is an input of the contract")
    fields = {name: inputs[name] for name in names}
    return _Bound(binding, featureset, Policy(binding.policy), fields)


class FeatureJoin:
    """The compiled join of one endpoint; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        bound: Sequence[_Bound],
        featuresets: dict[str, FeatureSet],
        metrics: FeatureMetrics,
    ) -> None:
        self.endpoint = endpoint.name
        self.featuresets = featuresets
        """The resolved sets, by ``name:version`` (compared when the gateway updates)."""
        self._bound = tuple(bound)
        self._metrics = metrics
        inputs = {field.name for field in endpoint.contract.inputs}
        keys = {b.binding.entity_key: b.featureset.entity.dtype for b in bound}
        # An entity key the model does not take is only for the lookup: dropped after it.
        self._drop = tuple(key for key in keys if key not in inputs)
        joined = {name for b in bound for name in b.fields}
        fields = [f for f in endpoint.contract.inputs if f.name not in joined]
        fields += [FieldSpec(name=key, dtype=keys[key]) for key in self._drop]
        self.records = RecordsCodec(fields)
        """Records requests carry the entity keys and the contract's other inputs."""

    async def join(
        self, inputs: Mapping[str, Array], store: OnlineStore | None, trace: RequestTrace | None
    ) -> tuple[Arrays, FeaturesUnavailable | None]:
        """``inputs`` with the bound features joined (request columns win), and, under the
        ``fallback`` policy, why the fallback must answer; ``fail`` raises
        :class:`FeaturesUnavailable` (HTTP 422)."""
        if store is None:
            raise StoreUnavailable(
                f"endpoint '{self.endpoint}' binds feature sets but no online store is configured"
            )
        if len(self._bound) == 1:
            parts = [await self._one(self._bound[0], inputs, store)]
        else:
            parts = list(await asyncio.gather(*(self._one(b, inputs, store) for b in self._bound)))
        joined = dict(inputs)
        for part in parts:
            joined.update(part.columns)
        for key in self._drop:
            joined.pop(key, None)
        if trace is not None:
            trace.features = FeatureEvidence(
                sets=tuple(b.featureset.ref for b in self._bound),
                ages_s={k: v for part in parts for k, v in part.ages.items()},
                defaulted=tuple(name for part in parts for name in part.defaulted),
                from_request=tuple(name for part in parts for name in part.from_request),
            )
        unavailable = next((p.unavailable for p in parts if p.unavailable is not None), None)
        return joined, unavailable

    async def _one(self, bound: _Bound, inputs: Mapping[str, Array], store: OnlineStore) -> _Joined:
        wanted = tuple(name for name in bound.fields if name not in inputs)
        from_request = tuple(name for name in bound.fields if name in inputs)
        if not wanted:
            return _Joined({}, {}, (), from_request)
        featureset = bound.featureset
        keys = _keys(inputs, bound.binding.entity_key, featureset)
        started = time.perf_counter()
        lookups = await asyncio.to_thread(
            store.read, featureset.name, featureset.version, keys, wanted, time.time()
        )
        self._observe(featureset.ref, lookups, time.perf_counter() - started)
        try:
            result = apply_policy(lookups, featureset, bound.policy, wanted)
        except FeaturesUnavailable as exc:
            self._violations(featureset.ref, [d for d in exc.details if d.get("age_s") is not None])
            raise
        stale = [p for p in result.problems if p.state is State.STALE]
        self._violations(featureset.ref, [{"field": f"features.{p.feature}"} for p in stale])
        ages = _oldest(featureset.ref, wanted, result)
        if result.use_fallback:
            return _Joined({}, ages, (), from_request, _unavailable(featureset, result.problems))
        columns = _columns(result, wanted, bound.fields)
        defaulted = sorted({name for row in result.rows for name in row.defaulted})
        return _Joined(columns, ages, tuple(defaulted), from_request)

    def _observe(self, ref: str, lookups: Sequence[Lookup], latency_s: float) -> None:
        metrics = self._metrics
        hits = 0
        for lookup in lookups:
            if lookup.ages:
                hits += 1
                # one event time per stored row: any feature's age is the row's age
                metrics.age(ref, next(iter(lookup.ages.values())))
        metrics.lookup(ref, latency_s, hits, len(lookups) - hits)

    def _violations(self, ref: str, details: Sequence[Mapping[str, Any]]) -> None:
        for detail in details:
            self._metrics.violation(ref, str(detail.get("field", "")).removeprefix("features."))


def _keys(inputs: Mapping[str, Array], field: str, featureset: FeatureSet) -> list[EntityKey]:
    column = inputs.get(field)
    if column is None:
        raise ContractViolation(
            f"the entity key '{field}' of feature set {featureset.ref} is missing",
            details=[{"field": field, "problem": "required to look up features"}],
        )
    values = np.asarray(column)
    if values.ndim == 0 or values.size != values.shape[0]:
        raise ContractViolation(
            f"the entity key '{field}' must hold one key per row",
            details=[{"field": field, "problem": f"shape {list(values.shape)}"}],
        )
    raw = values.reshape(-1).tolist()
    try:
        if featureset.entity.dtype is DType.STRING:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
        return [_int_key(v) for v in raw]
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ContractViolation(
            f"the entity key '{field}' is not a {featureset.entity.dtype}",
            details=[{"field": field, "problem": str(exc)}],
        ) from None


def _int_key(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{value!r} is not an integer key")
    return int(value)


def _columns(
    result: JoinResult, names: Sequence[str], fields: Mapping[str, FieldSpec]
) -> dict[str, Array]:
    """One array per feature, built one dtype at a time: a (rows, features) block per dtype,
    transposed once, whose rows are the columns (50 features: one array, not 50)."""
    by_dtype: dict[DType, list[str]] = {}
    for name in names:
        by_dtype.setdefault(fields[name].dtype, []).append(name)
    rows = result.rows
    columns: dict[str, Array] = {}
    for dtype, group in by_dtype.items():
        try:
            block = np.array([list(map(row.values.get, group)) for row in rows], dtype.numpy)
        except (TypeError, ValueError, OverflowError):
            columns |= {name: _column(result, name, fields[name]) for name in group}  # names it
            continue
        if block.ndim != 2:  # values that are themselves arrays: one feature at a time
            columns |= {name: _column(result, name, fields[name]) for name in group}
            continue
        for name, column in zip(group, block.T.copy(), strict=True):
            shape = fields[name].shape
            columns[name] = column if len(shape) <= 1 else column.reshape(len(rows), *shape[1:])
    return columns


def _column(result: JoinResult, name: str, spec: FieldSpec) -> Array:
    values = [row.values.get(name) for row in result.rows]
    try:
        column = np.array(values, dtype=spec.dtype.numpy)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ContractViolation(
            f"joined feature '{name}' does not fit the contract's {spec.dtype}",
            details=[{"field": name, "problem": str(exc)}],
        ) from None
    # a scalar feature as the contract shapes it: [-1] stays a column, [-1, 1] a matrix
    return column if len(spec.shape) <= 1 else column.reshape(len(values), *spec.shape[1:])


def _oldest(ref: str, names: Sequence[str], result: JoinResult) -> dict[str, float | None]:
    """Per feature, the oldest value's age over the rows; None when a row lacks it."""
    rows = result.rows
    if len(rows) == 1:
        ages = rows[0].ages
        return {f"{ref}/{name}": ages.get(name) for name in names}
    # None becomes NaN in a float array, and max propagates NaN: NaN means a row lacks it
    block = np.array([list(map(row.ages.get, names)) for row in rows], dtype=np.float64)
    oldest: list[float] = block.max(axis=0).tolist()
    return {
        f"{ref}/{name}": None if math.isnan(age) else age
        for name, age in zip(names, oldest, strict=True)
    }


def _unavailable(featureset: FeatureSet, problems: Sequence[ValueCheck]) -> FeaturesUnavailable:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return FeaturesUnavailable(
        f"feature set {featureset.ref}: {first.feature} is {first.problem}{more}",
        details=[
            {"field": f"features.{p.feature}", "problem": p.problem, "age_s": p.age_s}
            for p in problems
        ],
    )
