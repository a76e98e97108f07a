"""``python -m modelplane.spec.docs``: the resource reference, ``docs/resources.md``.

The page is generated from the pydantic specs themselves, so it cannot drift: a test
regenerates it and compares. A field's meaning is its attribute docstring (or
``Field(description=...)``); a field with neither takes its meaning from ``MEANINGS``
below, and a field with none at all fails that test.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from modelplane.spec.cluster import ClusterSpec
from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.job import Job
from modelplane.spec.manifest import Manifest
from modelplane.spec.policy import Policy
from modelplane.spec.rollout import RolloutSpec

__all__ = ["KINDS", "MEANINGS", "Kind", "field_meaning", "render", "undocumented"]


@dataclass(frozen=True, slots=True)
class Kind:
    """One top-level resource: how it is used and where its example lives."""

    model: type[BaseModel]
    title: str
    how: str
    example: str


KINDS: tuple[Kind, ...] = (
    Kind(
        Endpoint,
        "Endpoint",
        "The stable name callers use. `modelplane apply -f endpoint.yaml`; the contract is "
        "embedded (see Contract). Every route's model version must exist and satisfy it.",
        "examples/endpoint.yaml",
    ),
    Kind(
        FeatureSet,
        "FeatureSet",
        "Versioned features keyed by an entity. `modelplane apply -f featureset.yaml`; "
        "values arrive with `modelplane features push` or `materialize`.",
        "examples/featureset.yaml",
    ),
    Kind(
        RolloutSpec,
        "Rollout",
        "A change of an endpoint's traffic to a new version. Started with "
        "`modelplane rollout ENDPOINT -f rollout.yaml` (or `--to` alone: steps and gates "
        "default by strategy), then `pause`, `resume`, `promote`, `rollback`.",
        "examples/rollout.yaml",
    ),
    Kind(
        Job,
        "Job",
        "Batch work of a team in shards: `batch-score`, `materialize` or `python`. "
        "`modelplane apply -f job.yaml` or `modelplane jobs submit`; see docs/jobs.md.",
        "examples/job-batch-score.yaml",
    ),
    Kind(
        Policy,
        "Policy",
        "The rules of sharing: tiers, team quotas, floors, placement, preemption, "
        "autoscaling defaults, degradation. `modelplane apply -f policy.yaml`.",
        "examples/policy.yaml",
    ),
    Kind(
        ClusterSpec,
        "Cluster",
        "Declared nodes beside this machine (whose capacity is detected), for placement and "
        "`modelplane why`. Read from `$MODELPLANE_HOME/cluster.yaml`, or `--cluster FILE` of "
        "`modelplane nodes`, `why` and `policy diff`. Units: CPU millicores, memory MiB.",
        "examples/cluster.yaml",
    ),
    Kind(
        Contract,
        "Contract",
        "What callers of an endpoint may rely on; embedded as an endpoint's `contract:`. "
        "`modelplane contract check contract.yaml MODEL_REF` checks a model against it.",
        "examples/fraud-contract.yaml",
    ),
    Kind(
        Manifest,
        "Package manifest",
        "`modelplane.yaml` inside every package, written by `modelplane package`; shown by "
        "`modelplane inspect`. Read it, never edit it: the package digest covers it.",
        "(written by `modelplane package`)",
    ),
)

MEANINGS: dict[tuple[str, str], str] = {
    # Fields without a docstring in their spec, documented here instead.
    ("*", "api_version"): "The schema version of this document.",
    ("*", "kind"): "Which resource this document is.",
    ("Endpoint", "name"): "The name callers use in URLs (`/v1/endpoints/NAME:predict`).",
    ("Endpoint", "team"): "The owning team (quotas, audit, `modelplane status`).",
    ("Endpoint", "tier"): "Business criticality, a tier of the policy: "
    "`critical`, `standard` or `batch` by default.",
    ("Endpoint", "contract"): "What callers may rely on (see Contract).",
    ("Endpoint", "routes"): "Model versions (or aliases) that answer, with weights.",
    ("Endpoint", "shadows"): "Model versions that get a copy of traffic; answers discarded.",
    ("Endpoint", "replicas"): "Worker processes per routed model version.",
    ("Endpoint", "batching"): "Adaptive batching of each model version.",
    ("Endpoint", "max_queue_rows"): "Rows waiting per model version before new requests "
    "are shed with 429.",
    ("Endpoint", "labels"): "Free-form labels for people and tools.",
    ("Route", "model"): "`name:version` or `name@alias` (an alias is pinned at apply).",
    ("Route", "weight"): "Relative share of live traffic.",
    ("Shadow", "model"): "`name:version` or `name@alias` of the shadowed version.",
    ("Shadow", "percent"): "Share of requests copied to it.",
    ("Batching", "max_batch_size"): "Most rows in one call to the model.",
    ("Batching", "max_delay_ms"): "Longest a row waits for others to fill a batch.",
    ("FeatureBinding", "feature_set"): "`name:version` of the feature set.",
    ("FeatureBinding", "features"): "Features to join; empty: every feature the contract "
    "has an input for.",
    ("FeatureBinding", "policy"): "A stale or missing value: `fail` (422), `default` "
    "(the declared default) or `fallback` (the endpoint's fallback answers).",
    ("FeatureBinding", "compatible_versions"): "Other versions of the set that models "
    "trained on them may be served with.",
    ("Contract", "name"): "The contract's name (usually the endpoint's).",
    ("Contract", "version"): "Bumped on every change; a breaking change needs `--allow-breaking`.",
    ("Contract", "inputs"): "Fields every request row carries (or a feature join provides).",
    ("Contract", "outputs"): "Fields every answer carries.",
    ("Contract", "timeout_ms"): "Longest a caller waits before the fallback answers.",
    ("Contract", "fallback"): "What answers when the model cannot.",
    ("Contract", "slo"): "Latency and availability targets; `1 - availability` is the "
    "error budget.",
    ("Contract", "description"): "For people.",
    ("Fallback", "kind"): "`none` (fail with the typed error), `static` (answer `value`) "
    "or `endpoint` (ask another endpoint).",
    ("Fallback", "value"): "The static answer: a value for every contract output.",
    ("Fallback", "endpoint"): "The endpoint asked instead.",
    ("SLO", "availability"): "Share of requests answered by a model (not a fallback, "
    "not an error).",
    ("SLO", "latency_ms"): "Latency target at `latency_quantile`.",
    ("SLO", "latency_quantile"): "The quantile the latency target holds for.",
    ("SLO", "window_days"): "The window the error budget is counted over.",
    ("FieldSpec", "name"): "The field's name.",
    ("FieldSpec", "dtype"): "`bool`, `int8`..`int64`, `uint8`..`uint64`, `float16`.."
    "`float64`, `string`, `bytes` (v2 names such as `FP64` are accepted too).",
    ("FieldSpec", "shape"): "Dimensions; `-1` is variable. A column is `[-1]`.",
    ("FieldSpec", "nullable"): "Whether null values are accepted.",
    ("FieldSpec", "required"): "Whether requests must carry it (else `default`).",
    ("FieldSpec", "enum"): "The only values allowed.",
    ("FieldSpec", "range"): "Inclusive bounds of a numeric field.",
    ("FieldSpec", "default"): "The value of a missing optional field.",
    ("FieldSpec", "description"): "For people.",
    ("Range", "min"): "Lowest value allowed; open when absent.",
    ("Range", "max"): "Highest value allowed; open when absent.",
    ("FeatureSet", "name"): "The feature set's name.",
    ("FeatureSet", "version"): "Versions never change once a newer one exists.",
    ("FeatureSet", "team"): "The owning team.",
    ("FeatureSet", "entity"): "What the features describe and are keyed by.",
    ("FeatureSet", "features"): "The features, each typed.",
    ("FeatureSet", "freshness"): "The set's freshness SLA.",
    ("FeatureSet", "description"): "For people.",
    ("Entity", "name"): "The key's name, e.g. `customer_id`.",
    ("Entity", "dtype"): "The key's type: an integer type or `string`.",
    ("Feature", "name"): "The feature's name (a contract input of the same name gets it).",
    ("Feature", "dtype"): "The feature's type.",
    ("Feature", "default"): "The value used when it is missing or stale and the binding "
    "says `default`.",
    ("Feature", "max_age_s"): "Overrides the set's freshness for this feature.",
    ("Feature", "description"): "For people.",
    ("Freshness", "max_age_s"): "Oldest a value may be, in seconds, to count as fresh.",
    ("RolloutSpec", "endpoint"): "The endpoint whose traffic moves (the command's argument wins).",
    ("RolloutSpec", "to"): "The new model version, `name:version` or `name@alias`.",
    ("RolloutSpec", "strategy"): "`canary`, `shadow-then-canary` or `blue-green`.",
    ("RolloutSpec", "steps"): "Shadow and canary steps, in order; empty: the strategy's "
    "own (shadow 100 %, then 5, 25, 50, 100 %).",
    ("RolloutSpec", "gates"): "Checks that judge every step.",
    ("RolloutSpec", "on_fail"): "`rollback` (all traffic to stable by itself) or `pause`.",
    ("ShadowStep", "kind"): "`shadow`.",
    ("ShadowStep", "percent"): "Share of traffic copied to the new version.",
    ("ShadowStep", "hold_s"): "How long the step is held and judged.",
    ("CanaryStep", "kind"): "`canary` (implied by `weight`).",
    ("CanaryStep", "weight"): "Percent of live traffic to the new version.",
    ("CanaryStep", "hold_s"): "How long the step is held and judged.",
    ("*Gate", "type"): "Which gate.",
    ("ErrorRateGate", "max_rate"): "Highest error rate of the new version.",
    ("ErrorRateGate", "max_ratio"): "Highest error rate as a multiple of stable's.",
    ("LatencyGate", "quantile"): "The latency quantile judged.",
    ("LatencyGate", "max_ms"): "Highest latency at that quantile.",
    ("LatencyGate", "max_ratio"): "Highest latency as a multiple of stable's.",
    ("DriftGate", "psi_max"): "Highest population stability index of a numeric output.",
    ("DriftGate", "js_max"): "Highest Jensen-Shannon distance of a label output.",
    ("ShadowDisagreementGate", "max_disagreement"): "Highest share of rows whose label "
    "differs from stable's.",
    ("ShadowDisagreementGate", "max_relative_error"): "Highest mean relative error of "
    "numeric outputs against stable's.",
    ("ErrorBudgetBurnGate", "max_burn_rate"): "Highest burn rate (1 spends the budget "
    "exactly over the SLO window).",
    ("CustomGate", "function"): "`module:function` called with the window's stats.",
    ("Policy", "name"): "The policy's name; one policy is in force.",
    ("Policy", "tiers"): (
        "Tiers and what each may suffer; apply refuses a policy without a tier an endpoint"
        " or an unfinished job is in."
    ),
    ("Policy", "teams"): "Teams with their quotas and cohorts.",
    ("Policy", "admit_unknown_teams"): "Whether teams not listed may run work (no quota).",
    ("Policy", "floors"): "Capacity preemption never takes below.",
    ("Policy", "placement"): "How nodes are chosen.",
    ("Policy", "preemption"): "Whether and how lower tiers are preempted.",
    ("Policy", "autoscaling"): "Autoscaler defaults; endpoints may override them.",
    ("Policy", "degradation"): "What is given up under overload, in order.",
    ("TierRule", "name"): "The tier's name, used by endpoints and jobs.",
    ("TierRule", "priority"): "Higher wins admission and preemption.",
    ("TierRule", "preemptible"): "Whether its work may be preempted.",
    ("TierRule", "scale_to_zero"): "Whether idle endpoints may have no replica.",
    ("TierRule", "min_warm_replicas"): "Replicas kept running when idle.",
    ("Team", "name"): "The team's name.",
    ("Team", "cohort"): "Teams of one cohort lend each other unused quota.",
    ("Team", "quotas"): "Quota per resource: `cpu` (millicores), `memory` (MiB), `gpu` "
    "or `gpu/MODEL` (milli-GPU).",
    ("Quota", "nominal"): "The amount the team is guaranteed.",
    ("Quota", "borrowing_limit"): "How much more it may borrow from its cohort.",
    ("Quota", "lending_limit"): "How much of its nominal the cohort may use.",
    ("Floor", "tier"): "The tier the floor protects.",
    ("Floor", "team"): "The team the floor protects.",
    ("Floor", "resource"): "The resource counted.",
    ("Floor", "amount"): "The amount preemption never takes below.",
    ("PlacementPolicy", "strategy"): "`least-allocated`, `most-allocated`, `random`, "
    "`drf` or `fgd`.",
    ("PlacementPolicy", "seed"): "Seed of the `random` strategy.",
    ("PreemptionPolicy", "enabled"): "Whether preemption happens at all.",
    ("PreemptionPolicy", "reclaim_borrowed"): "Whether a team may take back quota it lent.",
    ("PreemptionPolicy", "max_victims"): "Most workloads evicted for one placement.",
    ("DegradationPolicy", "steps"): "What to give up, in order.",
    ("DegradationPolicy", "enter_overload"): "Overload (demand / capacity) that takes "
    "the next step.",
    ("DegradationPolicy", "exit_overload"): "Overload below which the last step is undone.",
    ("DegradationPolicy", "min_hold_s"): "Least time between two steps.",
    ("AutoscalingDefaults", "target_concurrency"): "In-flight requests per replica aimed at.",
    ("AutoscalingDefaults", "stable_window_s"): "Window of the averaged concurrency.",
    ("AutoscalingDefaults", "panic_window_s"): "Short window that triggers panic mode.",
    ("AutoscalingDefaults", "panic_threshold"): "Short-window demand over capacity that "
    "panics (scale up, never down).",
    ("AutoscalingDefaults", "max_scale_up_rate"): "Most a replica count may multiply by "
    "in one decision.",
    ("AutoscalingDefaults", "max_scale_down_rate"): "Most a replica count may divide by "
    "in one decision.",
    ("AutoscalingDefaults", "scale_to_zero_grace_s"): "Idle time before the last replica stops.",
    ("ClusterSpec", "name"): "The cluster's name.",
    ("ClusterSpec", "nodes"): "Machines declared by people.",
    ("ClusterSpec", "local"): "This machine, detected.",
    ("NodeSpec", "name"): "The node's name; one named like this machine replaces it.",
    ("NodeSpec", "cpu_milli"): "CPU, in millicores.",
    ("NodeSpec", "memory_mib"): "Memory, in MiB.",
    ("NodeSpec", "gpus"): "Its accelerators, all of one model.",
    ("NodeSpec", "labels"): "Labels placement may match.",
    ("NodeSpec", "cost_per_hour"): "What an hour of the node costs, for cost reports.",
    ("GPUs", "model"): "The GPU model, e.g. `A10`.",
    ("GPUs", "count"): "How many devices.",
    ("LocalNodeSpec", "detect"): "Whether this machine is a node at all.",
    ("LocalNodeSpec", "labels"): "Labels placement may match.",
    ("LocalNodeSpec", "cost_per_hour"): "What an hour of this machine costs.",
    ("Manifest", "name"): "The model's name in the registry.",
    ("Manifest", "runtime"): "What loads it: `onnx`, `sklearn`, `xgboost`, `lightgbm`, "
    "`torch`, `python`.",
    ("Manifest", "format"): "The model file's format.",
    ("Manifest", "model_file"): "The model file, relative to the package.",
    ("Manifest", "entrypoint"): "`module:Class` of a `python` runtime model.",
    ("Manifest", "trusted_pickle"): "Whether pickle-based formats may be loaded.",
    ("Manifest", "signature"): "Typed inputs and outputs.",
    ("Manifest", "resources"): "What one replica needs.",
    ("Manifest", "environment"): "Python and package versions it was built with.",
    ("Manifest", "lineage"): "Where it came from.",
    ("Manifest", "description"): "For people.",
    ("Manifest", "labels"): "Free-form labels.",
    ("Manifest", "files"): "Every file with its size and digest.",
    ("Signature", "inputs"): "Fields the model takes.",
    ("Signature", "outputs"): "Fields the model gives.",
    ("Resources", "cpu"): "CPU cores per replica.",
    ("Resources", "memory_mb"): "Memory per replica, in MiB.",
    ("Resources", "gpus"): "GPUs per replica (fractions share one).",
    ("Resources", "gpu_memory_mb"): "GPU memory per replica, in MiB.",
    ("Resources", "gpu_models"): "GPU models it may run on; empty: any.",
    ("Environment", "python"): "Python version it was built with.",
    ("Environment", "packages"): "Package versions it was built with.",
    ("DatasetRef", "uri"): "Where the data is.",
    ("FeatureRef", "feature_set"): "The feature set's name.",
    ("FeatureRef", "version"): "The feature set's version.",
    ("FeatureRef", "features"): "The features used.",
    ("Lineage", "training_data"): "Data it was trained on.",
    ("Lineage", "code_revision"): "The training code's revision.",
    ("Lineage", "parameters"): "Training parameters.",
    ("Lineage", "metrics"): "Evaluation metrics.",
    ("Lineage", "features"): "Feature set versions it was trained on.",
    ("FileEntry", "path"): "Path relative to the package.",
    ("FileEntry", "size"): "Size in bytes.",
    ("FileEntry", "sha256"): "The file's SHA-256, hex.",
    ("DatasetRef", "sha256"): "The data's SHA-256, hex, when known.",
}


def field_meaning(model: type[BaseModel], name: str) -> str:
    """The meaning of ``model.name``: docstring, description, else ``MEANINGS``."""
    info = model.model_fields[name]
    text = _attribute_docs(model).get(name) or info.description or ""
    if not text:
        text = MEANINGS.get((model.__name__, name), "")
    if not text and model.__name__.endswith("Gate"):
        text = MEANINGS.get(("*Gate", name), "")
    if not text:
        text = MEANINGS.get(("*", name), "")
    return _markdown(text)


def _markdown(text: str) -> str:
    """Docstrings use reST literals (````x````); Markdown wants single backquotes."""
    return " ".join(text.replace("``", "`").split())


def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Docstrings written under field declarations, through the model's bases."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        assert isinstance(body, ast.ClassDef)
        statements = body.body
        for first, second in itertools.pairwise(statements):
            if (
                isinstance(first, ast.AnnAssign)
                and isinstance(first.target, ast.Name)
                and isinstance(second, ast.Expr)
                and isinstance(second.value, ast.Constant)
                and isinstance(second.value.value, str)
            ):
                docs[first.target.id] = inspect.cleandoc(second.value.value)
    return docs


def _models(root: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """``root`` and every model its fields hold, depth first, each once; other kinds
    (a contract inside an endpoint) are documented in their own section."""
    seen: list[type[BaseModel]] = []
    kinds = {kind.model for kind in KINDS}

    def visit(model: type[BaseModel]) -> None:
        if model in seen or (model is not root and model in kinds):
            return
        seen.append(model)
        for info in model.model_fields.values():
            for inner in _nested(info.annotation):
                visit(inner)

    visit(root)
    yield from seen


def _nested(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from _nested(arg)


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        parts = [_type_text(a) for a in args if a is not type(None)]
        text = " \\| ".join(parts)
        return f"{text} \\| null" if type(None) in args else text
    if origin in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {_type_text(inner[0])}" if inner else "list"
    if origin is dict:
        return f"map {_type_text(args[0])} → {_type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{_title(annotation)}](#{_anchor(annotation)})"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


def _constraints(info: FieldInfo) -> str:
    out: list[str] = []
    for item in info.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen):
            out.append(f"at least {item.min_length}")
        if isinstance(item, annotated_types.MaxLen):
            out.append(f"at most {item.max_length}")
    return ", ".join(out)


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "see below" if value.model_dump(exclude_defaults=True) else "all defaults"
    if isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
        return ", ".join(f"`{_label(v)}`" for v in value)
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, tuple):
        value = [v.value if isinstance(v, Enum) else v for v in value]
    return f"`{json.dumps(value)}`"


def _label(value: BaseModel) -> str:
    return str(getattr(value, "name", "") or getattr(value, "type", type(value).__name__))


def _title(model: type[BaseModel]) -> str:
    top = next((k for k in KINDS if k.model is model), None)
    return top.title if top is not None else model.__name__


def _anchor(model: type[BaseModel]) -> str:
    return _title(model).lower().replace(" ", "-")


def _model_section(model: type[BaseModel], top: bool) -> list[str]:
    lines = [] if top else [f"### {_title(model)}", ""]
    doc = inspect.cleandoc(model.__doc__ or "")
    if doc:
        lines += [_markdown(doc.split("\n\n")[0]), ""]
    lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        kind = _type_text(info.annotation)
        bounds = _constraints(info)
        if bounds:
            kind += f" ({bounds})"
        meaning = field_meaning(model, name).replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {_default_text(info)} | {meaning} |")
    return [*lines, ""]


def render() -> str:
    """The whole reference page, Markdown."""
    out = [
        "# Resources",
        "",
        "<!-- Generated by `python -m modelplane.spec.docs > docs/resources.md`;"
        " tests/spec/test_docs.py fails when it is stale. -->",
        "",
        "Every resource is a YAML document with `api_version: modelplane/v1` (the default) "
        "and a `kind`. `modelplane apply -f FILE` takes any number of Endpoint, FeatureSet "
        "and Policy documents (`---` separated) and checks them all before recording any; "
        "a bad field is named by its path (`routes[0].model`). Rollouts are started with "
        "`modelplane rollout`; a Cluster is a file the scheduler reads. A working example "
        "of each kind is in `examples/` (tests/test_examples.py applies every one).",
        "",
        "| kind | example |",
        "| --- | --- |",
    ]
    out += [f"| [{k.title}](#{_anchor(k.model)}) | {_example_link(k)} |" for k in KINDS]
    out.append("")
    shown: set[type[BaseModel]] = set()
    for kind in KINDS:
        out += [f"## {kind.title}", "", kind.how, "", f"Example: {_example_link(kind)}", ""]
        for model in _models(kind.model):
            if model in shown:
                continue
            shown.add(model)
            out += _model_section(model, top=model is kind.model)
    return "\n".join(out).rstrip("\n") + "\n"


def _example_link(kind: Kind) -> str:
    if kind.example.startswith("examples/"):
        return f"[{kind.example}](../{kind.example})"
    return kind.example


def undocumented() -> list[str]:
    """``Model.field`` for every field of every kind that has no meaning."""
    return [
        f"{model.__name__}.{name}"
        for kind in KINDS
        for model in _models(kind.model)
        for name in model.model_fields
        if not field_meaning(model, name)
    ]


if __name__ == "__main__":
    print(render(), end="")
