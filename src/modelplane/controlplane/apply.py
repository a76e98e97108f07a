"""``apply``: validate declarative documents and record them as desired state.

An endpoint is accepted only when every model it routes to exists and its signature
satisfies the endpoint's contract, and when a changed contract is a new contract version
that existing callers can still use (breaking changes need ``allow_breaking``). Aliases in
routes are resolved once, here, and pinned in the spec (``pins``): moving an alias later
does not silently change what an endpoint runs; applying it again (or a rollout) does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelplane.controlplane.policy_fit import check_team_and_tier
from modelplane.core.compat import (
    Incompatibility,
    check_signature,
    compare_contracts,
    ensure_compatible,
)
from modelplane.core.fallback import check_fallback
from modelplane.errors import Conflict, Incompatible, InvalidSpec, NotFound
from modelplane.features.compat import check_revision
from modelplane.registry.service import Registry
from modelplane.security.signing import policy_in_force, require_trusted_refs
from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint, FeatureBinding
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.io import parse
from modelplane.spec.job import Job
from modelplane.spec.manifest import Manifest
from modelplane.spec.policy import Policy
from modelplane.store.jobs import JobStore
from modelplane.store.resources import Applied, ResourceStore

__all__ = ["ApplyResult", "Applier", "load_documents"]

Spec = Endpoint | Policy | FeatureSet | Job
KINDS: dict[str, type[Spec]] = {
    "Endpoint": Endpoint,
    "Policy": Policy,
    "FeatureSet": FeatureSet,
    "Job": Job,
}
JobCheck = Callable[[Job], None]
"""Checks a job's inputs before it is recorded (the composition supplies one that reads
the dataset; the control plane cannot)."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    kind: str
    name: str
    outcome: str
    generation: int
    warnings: tuple[Incompatibility, ...] = ()
    resolved: Mapping[str, Any] = field(default_factory=dict)


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a file (``---`` separated), as plain mappings."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{path}: no such file") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path}: not valid YAML: {exc}") from None
    if not documents:
        raise InvalidSpec(
            f"{path}: no documents (the file is empty or only comments)",
            details=[{"field": "file", "problem": "no YAML document"}],
        )
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise InvalidSpec(f"{path}: document {index + 1} is not a mapping")
    return documents


class Applier:
    """Applies documents against a registry (for model refs) and the resource store."""

    def __init__(
        self,
        registry: Registry,
        resources: ResourceStore,
        *,
        actor: str,
        job_check: JobCheck | None = None,
    ) -> None:
        self.registry = registry
        self.resources = resources
        self.actor = actor
        self.job_check = job_check

    def apply_all(
        self,
        documents: Iterable[Mapping[str, Any]],
        *,
        reason: str = "",
        allow_breaking: bool = False,
    ) -> list[ApplyResult]:
        """Validate every document first, then record them: a bad one records nothing.

        Teams and tiers are checked against a Policy among ``documents`` when there is one
        (it is the one in force once they are recorded), else against the policy in force."""
        specs = [self._parse(doc) for doc in documents]
        policy = next((s for s in specs if isinstance(s, Policy)), None)
        in_force = policy if policy is not None else policy_in_force(self.resources)
        if policy is not None:
            self._check_tiers_in_use(policy, specs)
        checked = [self._check(spec, allow_breaking, in_force) for spec in specs]
        return [
            self._record(spec, resolved, warnings, reason) for spec, resolved, warnings in checked
        ]

    def _parse(self, document: Mapping[str, Any]) -> Spec:
        kind = document.get("kind")
        model = KINDS.get(str(kind))
        if model is None:
            known = ", ".join(sorted(KINDS))
            raise InvalidSpec(
                f"kind: '{kind}' is not one of {known}",
                details=[{"field": "kind", "problem": f"expected one of {known}"}],
            )
        return parse(model, document, what=f"{kind}")

    def _check(
        self, spec: Spec, allow_breaking: bool, policy: Policy
    ) -> tuple[Spec, dict[str, Any], tuple[Incompatibility, ...]]:
        if isinstance(spec, Endpoint):
            resolved, warnings = self._check_endpoint(spec, allow_breaking, policy)
            return spec, resolved, warnings
        if isinstance(spec, FeatureSet):
            return spec, {}, self._check_feature_set(spec)
        if isinstance(spec, Job):
            return spec, self._check_job(spec, policy), ()
        if isinstance(spec, Policy):
            self._check_one_policy(spec)
        return spec, {}, ()

    def _check_tiers_in_use(self, policy: Policy, batch: Sequence[Spec]) -> None:
        """A policy may not drop a tier an endpoint or an unfinished job is in: the endpoint
        would serve, and the job run, silently at the lowest priority. Endpoints in the same
        apply count with the tier they are given there."""
        from modelplane.store.jobs import ACTIVE_STATES

        tiers = {t.name for t in policy.tiers}
        users: dict[str, str] = {}
        for stored in self.resources.list("Endpoint"):
            users[f"endpoint {stored.name}"] = str(
                stored.spec.get("tier") or Endpoint.model_fields["tier"].default
            )
        for record in JobStore(self.resources.engine).list_jobs(states=ACTIVE_STATES):
            users[f"job {record.name}"] = record.tier
        for spec in batch:
            if isinstance(spec, Endpoint | Job):
                users[f"{spec.kind.lower()} {spec.name}"] = spec.tier
        stranded = sorted(f"{who} ({tier})" for who, tier in users.items() if tier not in tiers)
        if stranded:
            listed = ", ".join(stranded[:5]) + (f" and {len(stranded) - 5} more"
                                                 if len(stranded) > 5 else "")  # fmt: skip
            raise Conflict(
                f"tiers: policy {policy.name} has no tier for {listed}: keep their tiers, or"
                " move them to one it has first",
                details=[{"field": "tiers", "problem": f"in use: {listed}"}],
            )

    def _check_one_policy(self, policy: Policy) -> None:
        """One policy is in force: a second one under another name would leave which rules
        apply to a guess."""
        others = [r.name for r in self.resources.list("Policy") if r.name != policy.name]
        if others:
            raise Conflict(
                f"policy '{others[0]}' is already applied and one policy is in force at a"
                f" time: apply this one as name: {others[0]}, or delete policy/{others[0]}"
                " first",
                details=[{"field": "name", "problem": f"another policy, '{others[0]}', applies"}],
            )

    def _check_feature_set(self, featureset: FeatureSet) -> tuple[Incompatibility, ...]:
        """Versions are immutable: a breaking change needs a higher version."""
        previous = [
            FeatureSet.model_validate(r.spec)
            for r in self.resources.list("FeatureSet")
            if r.spec.get("name") == featureset.name
        ]
        if not previous:
            return ()
        latest = max(previous, key=lambda fs: fs.version)
        if featureset.version < latest.version:
            same = next((fs for fs in previous if fs.version == featureset.version), None)
            if same is None or same != featureset:
                raise Conflict(
                    f"feature set {featureset.name}: version {featureset.version} is older "
                    f"than the latest, {latest.version}; versions never change once newer exist"
                )
            return ()
        return tuple(check_revision(latest, featureset))

    def _check_job(self, job: Job, policy: Policy) -> dict[str, Any]:
        """Pin the model (an alias resolves now, once); a job never changes once submitted."""
        ref = job.model_ref
        resolved: dict[str, Any] = {}
        if ref is not None and not job.pins:
            field = "work.model" if job.work.type == "batch-score" else "work.package"
            try:
                version = self.registry.get(ref)
            except NotFound as exc:
                raise NotFound(
                    f"{field}: {exc.message}", details=[{"field": field, "problem": exc.message}]
                ) from None
            resolved[ref] = {"ref": version.ref, "digest": version.digest}
        try:
            previous = self.resources.get("Job", job.name)
        except NotFound:
            previous = None
        if previous is not None:
            before = Job.model_validate(previous.spec).model_copy(update={"pins": {}})
            if before != job.model_copy(update={"pins": {}}):
                raise Conflict(
                    f"job {job.name} exists and a job does not change once submitted: cancel"
                    " it (modelplane jobs cancel) or submit under another name",
                    details=[{"field": "name", "problem": "a job with this name exists"}],
                )
            return {}
        # a team the queue never admits would wait forever; a misspelt tier runs last
        check_team_and_tier(policy, tier=job.tier, team=job.team)
        if self.job_check is not None:
            pins = {r: t["ref"] for r, t in resolved.items()}
            self.job_check(job.model_copy(update={"pins": pins}))
        return resolved

    def _tier_before(self, endpoint: Endpoint) -> str | None:
        try:
            stored = self.resources.get("Endpoint", endpoint.name)
        except NotFound:
            return None
        tier = stored.spec.get("tier")
        return str(tier) if tier is not None else Endpoint.model_fields["tier"].default

    def _queue_job(self, job: Job, generation: int, submitted_at: float) -> None:
        """The run exists from submit on (``jobs show`` answers at once); the job
        controller creates it too, should this process die in between."""
        _new_run(JobStore(self.resources.engine), job, generation, submitted_at)

    def _check_endpoint(
        self, endpoint: Endpoint, allow_breaking: bool, policy: Policy
    ) -> tuple[dict[str, Any], tuple[Incompatibility, ...]]:
        # A new or changed tier the policy lacks would serve silently at the lowest
        # priority. An unchanged one is not checked again: a rollout's traffic steps and a
        # rollback re-apply the endpoint, and must not fail because the policy changed since.
        if self._tier_before(endpoint) != endpoint.tier:
            check_team_and_tier(policy, tier=endpoint.tier)
        warnings: list[Incompatibility] = []
        resolved: dict[str, Any] = {}
        targets = [(f"routes[{i}]", r.model) for i, r in enumerate(endpoint.routes)]
        targets += [(f"shadows[{i}]", s.model) for i, s in enumerate(endpoint.shadows)]
        for path, ref in targets:
            try:
                version = self.registry.get(ref)
            except NotFound as exc:
                raise NotFound(
                    f"{path}.model: {exc.message}",
                    details=[{"field": f"{path}.model", "problem": exc.message}],
                ) from None
            findings = check_signature(version.manifest.signature, endpoint.contract)
            warnings += ensure_compatible(
                findings,
                subject=f"{path}.model {version.ref} against contract "
                f"{endpoint.contract.name} v{endpoint.contract.version}",
            )
            _check_lineage(f"{path}.model {version.ref}", version.manifest, endpoint.features)
            resolved[ref] = {"ref": version.ref, "digest": version.digest}
        # Trust is the policy's, never the manifest's (code and release signatures).
        pinned = {f"{path}.model": resolved[ref]["ref"] for path, ref in targets}
        # under the policy this apply puts in force, as its tiers are checked
        require_trusted_refs(self.registry, self.resources, endpoint.tier, pinned, policy)
        # What the gateway would refuse at start is refused here, naming the field.
        outputs = endpoint.contract.outputs
        if endpoint.fallback is not None:
            check_fallback(endpoint.fallback, outputs, field="fallback")
        else:
            check_fallback(endpoint.contract.fallback, outputs, field="contract.fallback")
        warnings += self._check_contract_change(endpoint, allow_breaking)
        return resolved, tuple(warnings)

    def _check_contract_change(
        self, endpoint: Endpoint, allow_breaking: bool
    ) -> list[Incompatibility]:
        try:
            previous = self.resources.get("Endpoint", endpoint.name)
        except NotFound:
            return []
        old = Contract.model_validate(previous.spec["contract"])
        new = endpoint.contract
        if old == new:
            return []
        if not (previous.status or {}).get("served_ever"):
            return []  # no caller ever got an answer under the old one: nothing to break
        subject = f"contract {new.name} v{old.version} -> v{new.version}"
        if new.version <= old.version:
            raise Incompatible(
                f"{subject}: the contract changed, so its version must go above {old.version}",
                details=[{"field": "contract.version", "problem": "bump it for any change"}],
            )
        findings = compare_contracts(old, new)
        if allow_breaking:
            return findings
        return ensure_compatible(findings, subject=subject)

    def _record(
        self,
        spec: Spec,
        resolved: dict[str, Any],
        warnings: tuple[Incompatibility, ...],
        reason: str,
    ) -> ApplyResult:
        # Feature set versions are separate resources: readers pin one (``customer:3``).
        name = spec.ref if isinstance(spec, FeatureSet) else spec.name
        if isinstance(spec, Endpoint):
            # Pins are desired state, so they live in the spec; status is the controllers'.
            pins = {ref: target["ref"] for ref, target in resolved.items()}
            spec = spec.model_copy(update={"pins": pins})
        if isinstance(spec, Job) and resolved:
            spec = spec.model_copy(update={"pins": {r: t["ref"] for r, t in resolved.items()}})
        if isinstance(spec, Job):
            try:  # applying the same job again changes nothing (its stored spec is pinned)
                stored = self.resources.get("Job", name)
                return ApplyResult(spec.kind, name, "unchanged", stored.generation)
            except NotFound:
                pass
        applied: Applied = self.resources.apply(
            spec.kind, name, spec.model_dump(mode="json"), actor=self.actor, reason=reason
        )
        resource = applied.resource
        if isinstance(spec, Job):
            self._queue_job(spec, resource.generation, resource.updated_at.timestamp())
        return ApplyResult(
            spec.kind, name, applied.outcome, resource.generation, warnings, resolved
        )


def _new_run(jobs: JobStore, job: Job, generation: int, submitted_at: float) -> None:
    jobs.create(
        name=job.name, uid=str(uuid.uuid4()), generation=generation, team=job.team,
        tier=job.tier, work_type=job.work.type, submitted_at=submitted_at, now=time.time(),
    )  # fmt: skip


def _check_lineage(subject: str, manifest: Manifest, bindings: Sequence[FeatureBinding]) -> None:
    """A model trained on ``set:N`` is served only from ``set:N`` (or a version the
    binding declares compatible): other versions may mean other values for the same name."""
    bound = {binding.set_name: binding for binding in bindings}
    for trained in manifest.lineage.features:
        binding = bound.get(trained.feature_set)
        if binding is None or binding.version == trained.version:
            continue
        if trained.version in binding.compatible_versions:
            continue
        index = next(i for i, b in enumerate(bindings) if b is binding)
        raise Incompatible(
            f"{subject} was trained on feature set {trained.feature_set}:{trained.version},"
            f" but the endpoint binds {binding.feature_set}; list {trained.version} in"
            " compatible_versions if the model may use it",
            details=[
                {
                    "field": f"features[{index}].feature_set",
                    "problem": f"model needs {trained.feature_set}:{trained.version}",
                }
            ],
        )
