"""Caches attached to users' objects without writing into them.

sdeflow keeps per-object caches (compiled graphs, parameter casts, coefficient tables) keyed by the
object's identity in a module-level table, never in the object's ``__dict__``: a user's model or SDE
stays exactly as the user built it, so ``copy.deepcopy`` (how every EMA copy starts), pickling and
``state_dict`` are unaffected. An entry lives as long as its object: it is dropped by a weak-reference
callback when the object is collected, so ids are never reused for a stale entry.

Objects that cannot be weakly referenced (e.g. ``int``, some builtins) get a fresh, empty dict each
time: callers then simply recompute.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["object_cache"]

_TABLES: dict[str, dict[int, tuple[weakref.ref, dict]]] = {}


def object_cache(obj: Any, name: str) -> dict:
    """The cache dict called ``name`` for ``obj`` (created empty on first use), kept outside ``obj``.

    Args:
        obj: any object; identity (not equality) selects the entry, so unhashable objects work too.
        name: which cache (one table per name, e.g. ``"compiled"``, ``"params_like"``).

    Returns:
        A dict owned by sdeflow that lives as long as ``obj``.
    """
    table = _TABLES.setdefault(name, {})
    key = id(obj)
    hit = table.get(key)
    if hit is not None and hit[0]() is obj:
        return hit[1]
    def drop(ref: weakref.ref, key: int = key, table: dict = table) -> None:
        if table.get(key, (None,))[0] is ref:
            del table[key]

    try:
        ref = weakref.ref(obj, drop)
    except TypeError:  # not weak-referenceable: no caching
        return {}
    entry: dict = {}
    table[key] = (ref, entry)
    return entry
