"""Failures of a whole settlement file (a bad row is data, never an exception: see rows.MalformedRow)."""

from __future__ import annotations


class ReconError(Exception):
    """Base of the reconciliation's own errors."""


class UnparseableFile(ReconError):
    """The file as a whole cannot be read: encoding, missing columns, broken record counts. It is quarantined."""


class UnknownPsp(UnparseableFile):
    """The object is not under `incoming/<psp>/` of a PSP we have a parser for."""


class OversizedFile(UnparseableFile):
    """The object is larger than one run reads (ReconSettings.max_file_bytes). Refused before any read."""


class CompressedFile(UnparseableFile):
    """The object starts with a compression or archive format's magic bytes. Refused, never decompressed."""
