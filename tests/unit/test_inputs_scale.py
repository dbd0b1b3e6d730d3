"""Discovery and duplicate detection hold little per case, and behave exactly as before."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fhir_cyclo.readers import case_files as inputs
from fhir_cyclo.readers.case_files import (
    CASE_SUFFIXES,
    COHORT_META,
    COHORT_PATIENTS,
    discover,
    load,
)
from tests.conftest import FIXTURES


def _rglob_discover(root: Path) -> Iterator[Path]:
    """The former implementation: every path of the tree, sorted."""
    for child in sorted(root.rglob("*")):
        if (child.is_dir() and (child / COHORT_PATIENTS).is_file()) or (
            child.is_file()
            and child.suffix in CASE_SUFFIXES
            and child.name != COHORT_META
            and not any((p / COHORT_PATIENTS).is_file() for p in child.parents)
        ):
            yield child


def test_walk_finds_what_sorted_rglob_found(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for folder in ("a/b", "a-b", "a.d", "c", "A"):
        (root / folder).mkdir(parents=True)
    for name in (
        "a.json",
        "a/b/x.yaml",
        "a-b/y.yml",
        "c/z.json",
        "c/cohort.yaml",
        "c/n.txt",
        "A/q.json",
        "a.d/0.json",
        "b.JSON",
    ):
        (root / name).write_text("{}")
    shutil.copytree(FIXTURES / "cohort", root / "a" / "cohort")
    shutil.copytree(FIXTURES / "cohort", root / "a" / "cohort" / "nested")
    (root / "a" / "cohort" / "inner.json").write_text("{}")  # inside a cohort: not a case
    (root / "link").symlink_to(root / "a", target_is_directory=True)
    (root / "cohort-link").symlink_to(root / "a" / "cohort", target_is_directory=True)
    expected = list(_rglob_discover(root))
    assert len(expected) >= 8
    assert list(discover([root])) == expected
    assert list(discover([FIXTURES])) == list(_rglob_discover(FIXTURES))


def _hash(value: str) -> str:
    return hashlib.sha256(f"http://example.org/sid|{value}".encode()).hexdigest()[:10]


def _case(value: str) -> bytes:
    return orjson.dumps(
        {
            "identifier": {"system": "http://example.org/sid", "value": value},
            "patient": {"sex": "female"},
        }
    )


@pytest.mark.parametrize("collide", [False, True])
def test_duplicates_name_the_first_source_even_when_digests_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collide: bool
) -> None:
    if collide:  # every token gets the same digest: only real duplicates may be reported
        monkeypatch.setattr(inputs._SeenTokens, "_digest", staticmethod(lambda token: 7))
    # 1,500 more: the table grows past its first size.
    more = 1500
    for n, value in enumerate(["a", "b", "a", "c", "b", "a"] + [f"x{i}" for i in range(more)]):
        (tmp_path / f"{n:05d}.json").write_bytes(_case(value))
    errors = [x.error for x in load([tmp_path]) if x.error is not None]
    assert [(Path(e.source).name, e.message) for e in errors] == [  # type: ignore[union-attr]
        ("00002.json", f"case id #{_hash('a')} already read from {tmp_path}/00000.json"),
        ("00004.json", f"case id #{_hash('b')} already read from {tmp_path}/00001.json"),
        ("00005.json", f"case id #{_hash('a')} already read from {tmp_path}/00000.json"),
    ]


def test_seen_tokens_remember_every_token_through_growth() -> None:
    seen = inputs._SeenTokens()
    tokens = [f"http://example.org/sid|case-{i}" for i in range(5000)]
    for token in tokens:
        assert not seen.maybe_seen(token)
        seen.add(token)
    assert all(seen.maybe_seen(t) for t in tokens)
    assert not any(seen.maybe_seen(f"{t}-other") for t in tokens)
    assert len(seen._slots) >= 1.5 * 5000  # grew, and stays at most two-thirds full
