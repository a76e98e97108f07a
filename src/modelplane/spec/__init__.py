"""Declarative resources: frozen pydantic models with YAML in and out."""

from modelplane.spec.contract import SLO, Contract, Fallback, FallbackKind
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Range, Signature
from modelplane.spec.io import dump_yaml, load_yaml, parse
from modelplane.spec.manifest import (
    MANIFEST_FILE,
    DatasetRef,
    Environment,
    FeatureRef,
    FileEntry,
    Lineage,
    Manifest,
    ModelFormat,
    Resources,
    Runtime,
)

__all__ = [
    "MANIFEST_FILE",
    "SLO",
    "Contract",
    "DType",
    "DatasetRef",
    "Environment",
    "Fallback",
    "FallbackKind",
    "FeatureRef",
    "FieldSpec",
    "FileEntry",
    "Lineage",
    "Manifest",
    "ModelFormat",
    "Range",
    "Resources",
    "Runtime",
    "Signature",
    "dump_yaml",
    "load_yaml",
    "parse",
]
