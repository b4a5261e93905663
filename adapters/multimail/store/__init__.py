"""Stores: where the service keeps state. ``open_store(url)`` picks one from a database URL.

Rule 1: ``sqlite:///relative/path.db`` (relative to the working directory),
        ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``, and ``memory://`` (the
        in-memory reference model; gone with the process). ``?synchronous=FULL`` on a SQLite
        URL trades commit speed for durability across power loss.
Rule 2: a SQLite file's parent directories are created; its schema is migrated on open.
Rule 3: ``postgresql://`` (and ``postgres://``) raise UnsupportedStore until the scale-out
        issue brings PostgreSQL; anything else is an InvalidValue naming the accepted forms.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote

from multimail.store.base import Store, UnsupportedStore
from multimail_core.errors import InvalidValue

FORMS = "sqlite:///relative.db, sqlite:////absolute.db, sqlite:///:memory: or memory://"
SQLITE = "sqlite://"
POSTGRES = ("postgresql", "postgres")


def open_store(url: str) -> Store:
    """The store a database URL names (module rules)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise InvalidValue("db", f"{url!r} is not a database URL; use {FORMS}")
    if scheme == "memory":
        if rest not in ("", "/"):
            raise InvalidValue("db", f"memory:// takes no path, got {url!r}")
        from multimail.store.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, rest)
    if scheme.split("+")[0] in POSTGRES:
        raise UnsupportedStore(
            f"PostgreSQL support arrives with the scale-out issue; use SQLite for now ({FORMS})"
        )
    raise InvalidValue("db", f"unsupported database URL scheme {scheme!r}; use {FORMS}")


def _sqlite(url: str, rest: str) -> Store:
    from multimail.store.sqlite import SqliteStore

    location, _, query = rest.partition("?")
    if not location.startswith("/") or len(location) < 2:
        raise InvalidValue("db", f"{url!r}: give a file, e.g. {FORMS}")
    # sqlite:///x.db → "x.db" (relative); sqlite:////srv/x.db → "/srv/x.db" (absolute).
    path = unquote(location[1:])
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(options.keys() - {"synchronous"})
    if unknown:
        raise InvalidValue("db", f"unknown SQLite URL options {unknown}; only synchronous")
    synchronous = options.get("synchronous", ["NORMAL"])[-1].upper()
    if synchronous == "NORMAL":
        return SqliteStore(path, synchronous="NORMAL")
    if synchronous == "FULL":
        return SqliteStore(path, synchronous="FULL")
    raise InvalidValue("db", f"synchronous must be NORMAL or FULL, not {synchronous!r}")


__all__ = ["Store", "UnsupportedStore", "open_store"]
