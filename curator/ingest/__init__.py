"""Ingest stage: datasets in their native layouts -> the ``cases`` table."""

from curator.ingest.stage import IngestConfig, IngestStage

__all__ = ["IngestConfig", "IngestStage"]
