"""The one "stage beside the target, then rename" implementation (immunostrat.ingest.atomic), for folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from immunostrat.ingest.atomic import is_hidden_leftover, rename_into_place, staged_folder


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) and its text, by path relative to `folder`."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_staged_folder_appears_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "out" / "20261101T000000Z-abcdef"
    with staged_folder(final, ".20261101T000000Z-abcdef.partial") as staging:
        assert staging == tmp_path / "out" / ".20261101T000000Z-abcdef.partial"
        assert is_hidden_leftover(staging.name)
        (staging / "run.json").write_text("{}")
        assert not final.exists()  # nothing under the final name until the block ends
    assert _tree(tmp_path / "out") == {"20261101T000000Z-abcdef/run.json": "{}"}


def test_a_failure_inside_the_block_leaves_no_folder(tmp_path: Path) -> None:
    final = tmp_path / "sponsor"
    with pytest.raises(RuntimeError, match="boom"), staged_folder(final) as staging:
        (staging / "part-0.parquet").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    final = tmp_path / "run"
    final.mkdir()
    (final / "run.json").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"), staged_folder(final):
        pytest.fail("the block must not run")
    assert _tree(tmp_path) == {"run/run.json": "old"}


def test_replace_swaps_the_old_folder_out_whole(tmp_path: Path) -> None:
    final = tmp_path / "sponsor"
    final.mkdir()
    (final / "old.txt").write_text("old")
    (final / "manifest.json").write_text("old")
    with staged_folder(final, replace=True) as staging:
        (staging / "manifest.json").write_text("new")
        assert _tree(final) == {"manifest.json": "old", "old.txt": "old"}  # readers still see the old one
    # The new folder only: no file of the old one survives, no hidden staging or replaced folder is left.
    assert _tree(tmp_path) == {"sponsor/manifest.json": "new"}


def test_rename_into_place_without_an_old_folder(tmp_path: Path) -> None:
    staging = tmp_path / ".sponsor.partial-abc123"
    staging.mkdir()
    (staging / "report.html").write_text("<html>")
    rename_into_place(staging, tmp_path / "sponsor")
    assert _tree(tmp_path) == {"sponsor/report.html": "<html>"}
