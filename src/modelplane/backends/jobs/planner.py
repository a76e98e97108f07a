"""The job planner of every kind: the :class:`~modelplane.core.jobplan.JobPlanner` over the
registry that the composition (``modelplane up``) hands the job controller.

Per kind, before any shard runs (each failed check names the spec field):

* ``batch-score``: the model pinned, dataset and columns against its signature, the output
  folder (:mod:`.plan`);
* ``materialize``: the feature set (latest version pinned at plan), the dataset, its
  columns against the feature set; receipts go to ``state_dir/<job uid>``;
* ``python``: the package pinned, a ``python``-runtime package the policy in force trusts
  for code (checked again before every attempt: trust can be withdrawn), the entry point
  present in its source, the dataset and the output folder (if any); without output,
  each shard's table goes to ``state_dir/<job uid>``.

Heavy imports (pyarrow, fsspec) wait until a job needs them, so ``up`` starts as fast.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelplane.errors import InvalidSpec, NotFound
from modelplane.spec.job import BatchScoreJob, Job, MaterializeJob, OutputData, PythonJob

if TYPE_CHECKING:
    from modelplane.backends.jobs.models import JobModel
    from modelplane.core.jobplan import PlannedJob
    from modelplane.core.jobs import ShardPlan, ShardTask
    from modelplane.registry.service import Registry
    from modelplane.spec.featureset import FeatureSet
    from modelplane.spec.manifest import Manifest

__all__ = ["JobsPlanner", "absolute_urls"]


class JobsPlanner:
    """Plans jobs of every kind against the registry; packages are fetched and verified
    once per digest into ``cache_dir``; ``state_dir`` holds receipts of jobs that name no
    output folder; ``feature_store_url`` is the online store materialize jobs write."""

    def __init__(
        self,
        registry: Registry,
        cache_dir: Path,
        *,
        state_dir: Path | None = None,
        feature_store_url: str | None = None,
    ) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self.state_dir = state_dir or cache_dir.parent / "jobs"
        self.feature_store_url = feature_store_url

    # -- the protocol --------------------------------------------------------------------

    def plan(self, job: Job, uid: str) -> PlannedJob:
        from modelplane.backends.jobs.plan import check_output, plan_batch_score
        from modelplane.core.jobplan import PlannedJob

        work = job.work
        if isinstance(work, BatchScoreJob):
            model = self._model(job, None, "work.model")
            info, shards = plan_batch_score(work, model.manifest.signature, uid)
            return PlannedJob(shards, info.rows, model.ref, model.digest, work.output.url)
        if isinstance(work, MaterializeJob):
            return self._plan_materialize(work, uid)
        model = self._trusted(job, None)
        self._check_entrypoint(model, work.entrypoint)
        if work.push_as is not None:
            self._check_push_as(work.push_as, job.team)
        shards = self._python_shards(work)
        if work.output is not None:
            check_output(work.output, uid)
        # no row total: a shard counts the rows its function returned, which no plan knows
        return PlannedJob(shards, None, model.ref, model.digest, self._output(job, uid).url)

    def claim(self, job: Job, uid: str, planned: PlannedJob) -> None:
        from modelplane.backends.jobs.plan import claim_output

        claim_output(self._output(job, uid, planned), uid, job.name)

    def task(
        self, job: Job, uid: str, plan: ShardPlan, attempt: int, planned: PlannedJob
    ) -> ShardTask:
        from modelplane.backends.jobs.models import fetch_package
        from modelplane.backends.jobs.plan import shard_task

        work = job.work
        if isinstance(work, BatchScoreJob):
            model = self._model(job, planned, "work.model")
            folder = fetch_package(self.registry, model, self.cache_dir)
            return shard_task(
                job, uid, plan, attempt, model_ref=model.ref, model_digest=model.digest,
                model_dir=str(folder), signature=model.manifest.signature,
            )  # fmt: skip
        output = self._output(job, uid, planned)
        if isinstance(work, MaterializeJob):
            featureset = self._feature_set(planned.model_ref or work.feature_set)
            return _task(job, uid, plan, attempt, output, ref=featureset.ref, extra={
                "feature_set": featureset.model_dump_json(),
                "feature_store_url": self._store_url(),
                "csv_types": _csv_types(featureset),
            })  # fmt: skip
        model = self._trusted(job, planned)
        folder = fetch_package(self.registry, model, self.cache_dir)
        return _task(job, uid, plan, attempt, output, ref=model.ref, digest=model.digest,
                     model_dir=str(folder))  # fmt: skip

    def finish(self, job: Job, uid: str, planned: PlannedJob, rows: int) -> None:
        from modelplane.backends.jobs.plan import write_success

        work = job.work
        if isinstance(work, PythonJob) and work.push_as is not None:
            self._push_trained(job, uid, planned)
        write_success(
            self._output(job, uid, planned), uid, job_name=job.name,
            shards=len(planned.shards), rows=rows, digest=planned.model_digest or "",
        )  # fmt: skip

    # -- kinds ---------------------------------------------------------------------------

    def _plan_materialize(self, work: MaterializeJob, uid: str) -> PlannedJob:
        from modelplane.backends.jobs.kinds import check_materialize_columns
        from modelplane.backends.jobs.plan import inspect_dataset, plan_shards
        from modelplane.core.jobplan import PlannedJob

        featureset = self._feature_set(work.feature_set)
        self._store_url()
        info = inspect_dataset(work.input)
        check_materialize_columns(info.schema, featureset)
        shards = plan_shards(info, work.shard, 100_000)
        return PlannedJob(shards, info.rows, featureset.ref, None, self._receipts(uid))

    def _python_shards(self, work: PythonJob) -> tuple[ShardPlan, ...]:
        from modelplane.backends.jobs.kinds import plan_one_shard
        from modelplane.backends.jobs.plan import inspect_dataset, plan_shards

        if work.input is None:
            return plan_one_shard(0)
        info = inspect_dataset(work.input)
        if work.push_as is not None:
            return plan_one_shard(info.rows)  # training sees all of its data at once
        return plan_shards(info, work.shard, 100_000)

    def _push_trained(self, job: Job, uid: str, planned: PlannedJob) -> None:
        """Push the package the training shard built under ``push_as``, its lineage naming
        the job, its input data and the code package (resealed: lineage is in the digest)."""
        from modelplane.backends.jobs.kinds import training_package
        from modelplane.core.jobs import part_name
        from modelplane.registry.digest import read_manifest, seal

        work = job.work
        assert isinstance(work, PythonJob)
        assert work.push_as is not None
        part = f"{self._output(job, uid, planned).url.rstrip('/')}/{part_name(0)}"
        scratch = Path(tempfile.mkdtemp(prefix="modelplane-push-"))
        try:
            folder = training_package(_local(part, scratch), scratch / "package")
            built = read_manifest(folder)
            seal(folder, _with_job_lineage(built, job, uid, planned))
            self.registry.push(
                folder, actor=f"job:{job.name}", team=job.team,
                reason=f"trained by job {job.name} ({uid})",
            )  # fmt: skip
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def _model(self, job: Job, planned: PlannedJob | None, field: str) -> JobModel:
        from modelplane.backends.jobs.models import resolve_model

        ref = planned.model_ref if planned is not None and planned.model_ref else job.model_ref
        return resolve_model(self.registry, ref or "", field=field)

    def _trusted(self, job: Job, planned: PlannedJob | None) -> JobModel:
        """The job's package: a ``python``-runtime one that the policy trusts for code."""
        from modelplane.security.signing import require_trusted_refs
        from modelplane.spec.manifest import Runtime
        from modelplane.store.resources import ResourceStore

        model = self._model(job, planned, "work.package")
        runtime = model.manifest.runtime
        if runtime is not Runtime.PYTHON:
            problem = (f"{model.ref} is a '{runtime.value}' package; a python job runs code"
                       " from a 'python'-runtime package")  # fmt: skip
            raise InvalidSpec(f"work.package: {problem}",
                              details=[{"field": "work.package", "problem": problem}])  # fmt: skip
        resources = ResourceStore(self.registry.engine)
        require_trusted_refs(self.registry, resources, job.tier, {"work.package": model.ref})
        return model

    def _check_push_as(self, name: str, team: str) -> None:
        """A training job pushes only to a model of its own team (or a new one), so the
        push that ends it never fails after all the work is done."""
        from modelplane.errors import Forbidden

        try:
            owner = self.registry.model_team(name)
        except NotFound:
            return  # a new model: it becomes the team's
        if owner == team or (
            owner is None and not self.registry.list_versions(name, include_archived=True)
        ):
            return
        whose = f"team '{owner}'" if owner else "no team (only admin may push to it)"
        problem = f"model '{name}' belongs to {whose}, not '{team}'"
        raise Forbidden(f"work.push_as: {problem}",
                        details=[{"field": "work.push_as", "problem": problem}])  # fmt: skip

    def _check_entrypoint(self, model: JobModel, entrypoint: str) -> None:
        from modelplane.backends.jobs.kinds import check_entrypoint_in
        from modelplane.backends.jobs.models import fetch_package

        check_entrypoint_in(fetch_package(self.registry, model, self.cache_dir), entrypoint)

    def _feature_set(self, ref: str) -> FeatureSet:
        from modelplane.spec.featureset import FeatureSet
        from modelplane.store.resources import ResourceStore

        name, _, version = ref.partition(":")
        resources = ResourceStore(self.registry.engine)
        found = [FeatureSet.model_validate(r.spec) for r in resources.list("FeatureSet")
                 if r.spec.get("name") == name]  # fmt: skip
        chosen = [f for f in found if not version or f.version == int(version)]
        if not chosen:
            what = f"feature set '{ref}'" + ("" if version else " (any version)")
            problem = f"{what} is not applied; apply it first"
            raise NotFound(f"work.feature_set: {problem}",
                           details=[{"field": "work.feature_set", "problem": problem}])  # fmt: skip
        return max(chosen, key=lambda f: f.version)

    def _store_url(self) -> str:
        if not self.feature_store_url:
            raise InvalidSpec(
                "work.type: materialize jobs need an online store and none is configured"
                " (MODELPLANE_FEATURE_STORE_URL)",
                details=[{"field": "work.type", "problem": "no online store configured"}],
            )
        return self.feature_store_url

    def _receipts(self, uid: str) -> str:
        return str(self.state_dir / uid)

    def _output(self, job: Job, uid: str, planned: PlannedJob | None = None) -> OutputData:
        work = job.work
        if isinstance(work, BatchScoreJob):
            return work.output
        if isinstance(work, PythonJob) and work.output is not None and work.push_as is None:
            return work.output
        # the recorded folder, so a resumed job finds the receipts it wrote before
        url = planned.output_url if planned is not None and planned.output_url else None
        return OutputData(url=url or self._receipts(uid))


def _task(
    job: Job,
    uid: str,
    plan: ShardPlan,
    attempt: int,
    output: OutputData,
    *,
    ref: str,
    digest: str | None = None,
    model_dir: str | None = None,
    extra: dict[str, str] | None = None,
) -> ShardTask:
    from modelplane.backends.jobs.plan import ATTEMPTS_FOLDER
    from modelplane.core.jobs import ShardReservation, ShardTask, part_name

    root, name = output.url.rstrip("/"), part_name(plan.index)
    return ShardTask(
        job_name=job.name, job_uid=uid, job=job, plan=plan, attempt=attempt,
        final_path=f"{root}/{name}", temp_path=f"{root}/{ATTEMPTS_FOLDER}/{name}.{attempt}.tmp",
        reservation=ShardReservation.of(job), model_dir=model_dir, model_digest=digest,
        model_ref=ref, extra=extra or {},
    )  # fmt: skip


def _csv_types(featureset: FeatureSet) -> str:
    from modelplane.features.columns import arrow_type

    types = {f.name: arrow_type(f.dtype) for f in featureset.features}
    types[featureset.entity.name] = arrow_type(featureset.entity.dtype)
    return "".join(f"{name}={dtype}\n" for name, dtype in types.items())


def _local(url: str, scratch: Path) -> str:
    """A local path holding ``url``'s bytes (the URL itself when it is local)."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        return str(path)
    target = scratch / "part.parquet"
    fs.get_file(path, str(target))
    return str(target)


def _with_job_lineage(built: Manifest, job: Job, uid: str, planned: PlannedJob) -> Manifest:
    from modelplane.registry.provenance import dataset_ref, json_safe
    from modelplane.spec.manifest import Lineage

    work = job.work
    assert isinstance(work, PythonJob)
    assert work.push_as is not None
    data = tuple(built.lineage.training_data)
    if work.input is not None:
        data = (dataset_ref(work.input.url), *(d for d in data if d.uri != work.input.url))
    parameters = {**built.lineage.parameters, **json_safe(dict(work.parameters)),
                  "modelplane.job": job.name, "modelplane.job_uid": uid}  # fmt: skip
    lineage = Lineage(
        training_data=data,
        code_revision=f"{planned.model_ref}@{planned.model_digest}",
        parameters=parameters,
        metrics=built.lineage.metrics,
        features=built.lineage.features,
    )
    return built.model_copy(update={"name": work.push_as, "lineage": lineage})


def absolute_urls(document: dict[str, Any], cwd: str) -> dict[str, Any]:
    """A Job document whose local, relative ``work.input.url`` and ``work.output.url`` are
    made absolute against ``cwd``: the submitter's folder, not the control plane's, which
    may run elsewhere (``modelplane up`` started in another folder, a remote server).
    URLs with a scheme (``s3://``, ``file://``) and absolute paths are left as written."""
    work = document.get("work")
    if not isinstance(work, dict):
        return document
    changed = dict(work)
    for key in ("input", "output"):
        place = work.get(key)
        url = place.get("url") if isinstance(place, dict) else None
        if isinstance(place, dict) and isinstance(url, str) and _relative_path(url):
            changed[key] = {**place, "url": posixpath.normpath(posixpath.join(cwd, url))}
    return {**document, "work": changed}


def _relative_path(url: str) -> bool:
    return bool(url) and "://" not in url and not url.startswith(("/", "~"))
