"""Errors raised by :mod:`mismatch.data`; each message names the file or setting at fault."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset, a file in it, or a preparation setting cannot be used."""


class SplitError(DataError):
    """A fold cannot be split as asked (too few cases, fold out of range, bad splits file)."""


class LeakageError(SplitError):
    """A case appears in more than one role (labelled / unlabelled / validation / test)."""


class FingerprintMismatchError(DataError):
    """The prepared data differ from the fingerprint pinned in the data spec."""


class OutputExistsError(DataError, FileExistsError):
    """An output folder exists and is not empty (and overwriting was not asked for)."""
