"""Registries by name: the one authority for every name a spec, a study or a table uses.

A :class:`Registry` maps names to entries (a method's config class, a network card, a dataset
layout, a preset). Registering a name twice is an error (big_vision style). A registry may
name packages to *discover*: on first access every module of those packages is imported
(a ``pkgutil`` scan), so a new file that registers itself is found with no list to edit.
An unknown name raises :class:`UnknownNameError` with a one-line message built by
:func:`did_you_mean`. Standard library only: loading a spec never imports torch or Ray.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_MISSING: Any = object()


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry has; the message suggests the closest known name.

    Both a ``KeyError`` (a failed lookup) and a ``ValueError`` (pydantic validators turn it
    into a validation error that names the key).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to ``word``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown method 'mismach' (did you mean 'mismatch'?); known: a, b, c`` (one line)."""
    known = sorted(known)
    return f"unknown {kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}"


def load_object(path: str) -> Any:
    """The object a ``"package.module:attribute"`` string names (imported on call)."""
    module, sep, attribute = path.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"expected 'module:attribute', got {path!r}")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Entries of one ``kind`` (e.g. ``"method"``) by name.

    ``discover`` names packages (or modules) imported on first access; each module of a
    package registers its own entries, so adding one is adding a file.
    """

    def __init__(self, kind: str, discover: Iterable[str] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._discover = tuple(discover)
        self._discovered = not self._discover

    def register(self, name: str, entry: T = _MISSING) -> Any:
        """Register ``entry`` under ``name`` (returns it), or, without ``entry``, a decorator
        that registers what it decorates. A name already registered is a ``ValueError``."""
        if entry is _MISSING:
            return lambda obj: self.register(name, obj)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (for tests and plugins that replace one)."""
        return self._entries.pop(name)

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The entry of ``name``; unknown names raise :class:`UnknownNameError` (or return
        ``default`` when one is given)."""
        self._ensure_discovered()
        if name in self._entries:
            return self._entries[name]
        if default is not _MISSING:
            return default
        raise UnknownNameError(unknown_name_message(self.kind, name, self._entries))

    def check(self, name: str) -> str:
        """``name`` itself if registered, else :class:`UnknownNameError` (for validators)."""
        self.get(name)
        return name

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_discovered()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, sorted by name."""
        return [(name, self._entries[name]) for name in self.names()]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # set first: a module being imported may look names up
        try:
            for target in self._discover:
                _import_all(target)
        except BaseException:
            self._discovered = False
            raise


def _import_all(target: str) -> None:
    """Import ``target`` and, if it is a package, every module in it (not ``_private`` ones)."""
    module = importlib.import_module(target)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.name.startswith("_"):
            importlib.import_module(f"{target}.{info.name}")


def registered(registry: Registry[T], name: str) -> Callable[[T], T]:
    """Decorator form of ``registry.register(name)`` with a precise type."""
    return registry.register(name)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names import on first use
    (PEP 562): ``exports`` maps each name to the module that defines it. Lets a package
    re-export torch classes while its torch-free parts (configs, catalogues) load without torch."""
    names = sorted(exports)

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return getattr_, lambda: names
