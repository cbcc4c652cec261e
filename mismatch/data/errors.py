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


class FileProblemError(DataError):
    """One file cannot be used: ``path`` is the file, ``problem`` says why (without the path)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DataCheckError(DataError):
    """A dataset failed its checks; ``problems`` lists every ``(path, problem)`` found."""

    def __init__(self, root: object, problems: list) -> None:
        self.root = root
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in {root}:\n{lines}")
