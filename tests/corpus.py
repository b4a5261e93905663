"""The shared email corpus (../shared/corpus next to the repository): real-world and
malformed messages, with DSN bounces and ARF complaints. Tests that need it skip cleanly
when the folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_files(subdir: str = "") -> list[Path]:
    """Every ``*.eml`` under the corpus (or one of its folders), sorted; [] when absent."""
    root = CORPUS / subdir
    return sorted(root.rglob("*.eml")) if root.is_dir() else []


def require_corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the email corpus is not at {CORPUS}")
    return CORPUS


__all__ = ["CORPUS", "corpus_files", "require_corpus"]
