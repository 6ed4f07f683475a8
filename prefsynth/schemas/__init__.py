"""Dataset schemas (the contract between stages) and sharded Parquet IO."""

from prefsynth.schemas.datasets import KEYS, SCHEMA_VERSION, SCHEMAS, schema_for

__all__ = ["KEYS", "SCHEMA_VERSION", "SCHEMAS", "schema_for"]
