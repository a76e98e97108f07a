"""Feature sets at serve time: online stores, ingestion, materialization and freshness.

Engine stores live in their own modules (:mod:`modelplane.features.sqlite`,
:mod:`modelplane.features.redis`) so importing this package pulls in neither driver.
"""

from modelplane.features.base import EntityKey, Lookup, OnlineStore, Row, WriteResult
from modelplane.features.compat import check_revision, compare_feature_sets
from modelplane.features.freshness import (
    FeaturesUnavailable,
    JoinedRow,
    JoinResult,
    Policy,
    State,
    ValueCheck,
    apply_policy,
    classify,
)
from modelplane.features.ingest import push, validate_rows
from modelplane.features.memory import MemoryOnlineStore

__all__ = [
    "EntityKey",
    "FeaturesUnavailable",
    "JoinResult",
    "JoinedRow",
    "Lookup",
    "MemoryOnlineStore",
    "OnlineStore",
    "Policy",
    "Row",
    "State",
    "ValueCheck",
    "WriteResult",
    "apply_policy",
    "check_revision",
    "classify",
    "compare_feature_sets",
    "push",
    "validate_rows",
]
