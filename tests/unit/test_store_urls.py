"""open_store: which store a database URL names, and the URLs it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimail.store import open_store
from multimail.store.base import UnsupportedStore
from multimail.store.memory import MemoryStore
from multimail.store.migrations import MIGRATIONS
from multimail.store.sqlite import SqliteStore
from multimail_core.errors import InvalidValue, MultimailError


def test_memory_url_gives_the_reference_store() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///./var/multimail.db", "./var/multimail.db"),  # the serve default
        ("sqlite:///var/deep/multimail.db", "var/deep/multimail.db"),
    ],
)
def test_relative_sqlite_path_is_under_the_working_directory(
    url: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(url)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == path
        assert (tmp_path / path).is_file()  # parent directories created
        assert store.schema_version() == len(MIGRATIONS)
    finally:
        store.close()


def test_four_slashes_give_an_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.db"
    store = open_store(f"sqlite:///{target}")
    assert str(target).startswith("/")  # so the URL above has four slashes
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == str(target)
        assert target.is_file()
    finally:
        store.close()


def test_sqlite_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///:memory:")
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == ":memory:"
        assert list(tmp_path.iterdir()) == []
    finally:
        store.close()


@pytest.mark.parametrize(("query", "level"), [("", 1), ("?synchronous=NORMAL", 1),
                                              ("?synchronous=full", 2)])  # fmt: skip
def test_synchronous_option(tmp_path: Path, query: str, level: int) -> None:
    store = open_store(f"sqlite:///{tmp_path}/x.db{query}")
    try:
        assert isinstance(store, SqliteStore)
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == level
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mm:secret@db.internal/multimail",
        "postgres://localhost/multimail",
        "postgresql+psycopg://localhost/multimail",
    ],
)
def test_postgresql_is_announced_not_silently_refused(url: str) -> None:
    with pytest.raises(UnsupportedStore, match="scale-out issue") as raised:
        open_store(url)
    assert isinstance(raised.value, NotImplementedError)
    assert isinstance(raised.value, MultimailError)
    assert raised.value.code == "unsupported_store"
    assert "secret" not in str(raised.value)  # the URL's password is not echoed


@pytest.mark.parametrize(
    "url",
    [
        "",
        "multimail.db",
        "mysql://localhost/mm",
        "sqlite://",
        "sqlite:///",
        "sqlite://relative.db",
        "memory://somewhere",
        "sqlite:///x.db?journal=off",
        "sqlite:///x.db?synchronous=OFF",
    ],
)
def test_malformed_or_unknown_urls_are_invalid_values(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidValue) as raised:
        open_store(url)
    assert raised.value.field == "db"
    assert list(tmp_path.iterdir()) == []  # nothing created on the way to the error
