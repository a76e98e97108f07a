"""Moved to :mod:`modelplane.system.jobs`, where the live system is composed; the names
stay importable from here for the CLI commands and tests that use them."""

from modelplane.system.jobs import LocalJobPlanner, run_jobs, submit_check

__all__ = ["LocalJobPlanner", "run_jobs", "submit_check"]
