"""Pseudonym keys (sources, refusals, the demo key) and the keyed pseudonyms themselves."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

import polars as pl
import pytest

from immunostrat.sponsor.pseudonym import (
    KEY_ENV,
    KEY_FILE_ENV,
    PseudonymKey,
    PseudonymKeyError,
    date_shifts,
    demo_key_path,
    key_id,
    load_key,
    pseudonymise,
    site_pseudonyms,
    subject_pseudonyms,
)

SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key from the developer's environment, and a private config home for the demo key."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _key(secret: str = SECRET) -> PseudonymKey:
    data = secret.encode()
    return PseudonymKey(secret=data, key_id=key_id(data), source="test")


def _key_file(folder: Path, text: str = SECRET, mode: int = 0o600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pseudonym.key"
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_missing_key_is_a_clear_error_outside_the_demo() -> None:
    with pytest.raises(PseudonymKeyError) as error:
        load_key()
    message = str(error.value)
    assert KEY_ENV in message and "key_file" in message and "token_hex" in message
    assert not demo_key_path().exists()  # never a silent default


def test_environment_key_wins_and_is_never_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    key = load_key(_key_file(tmp_path / "keys", "f" * 64))
    assert (key.source, key.key_id) == ("environment", key_id(SECRET.encode()))
    assert key.key_id == hashlib.sha256(b"immunostrat-key-id:" + SECRET.encode()).hexdigest()[:8]
    assert SECRET not in repr(key)


def test_key_file_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _key_file(tmp_path / "keys")
    assert load_key(path).key_id == key_id(SECRET.encode())
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    loaded = load_key()
    assert (loaded.source, loaded.path) == ("key file", path)


def test_short_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "too-short")
    with pytest.raises(PseudonymKeyError, match="at least 32"):
        load_key()


def test_key_file_inside_a_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    path = _key_file(tmp_path / "repo" / "secrets")
    with pytest.raises(PseudonymKeyError, match="inside the git work tree"):
        load_key(path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "keys", mode=0o644)
    with pytest.raises(PseudonymKeyError, match="chmod 600"):
        load_key(path)


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PseudonymKeyError, match="does not exist"):
        load_key(tmp_path / "nowhere.key")


def test_demo_key_is_created_once_outside_the_repository(tmp_path: Path) -> None:
    first = load_key(demo=True)
    path = tmp_path / "config" / "immunostrat" / "demo-pseudonym.key"
    assert (first.created, first.path, first.source) == (True, path, "demo key file")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text().strip()) == 64
    second = load_key(demo=True)
    assert (second.created, second.key_id) == (False, first.key_id)


def test_pseudonym_follows_the_documented_formula() -> None:
    message = b"immunostrat:v1:subject\x00" + json.dumps(["SLE-1", "101-0007"], separators=(",", ":")).encode()
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert pseudonymise(_key(), "subject", ["SLE-1", "101-0007"]) == expected
    series = subject_pseudonyms(_key(), pl.Series(["SLE-1"]), pl.Series(["101-0007"]))
    assert series.to_list() == [expected[:32]]


def test_same_subject_same_pseudonym_in_any_order_and_frame() -> None:
    key = _key()
    studies = pl.Series(["A", "A", "B", "A"])
    subjects = pl.Series(["1", "2", "1", "1"])
    first = subject_pseudonyms(key, studies, subjects).to_list()
    assert first[0] == first[3]  # same subject, same pseudonym
    assert len({first[0], first[1], first[2]}) == 3  # subject 1 of study B is another person
    again = subject_pseudonyms(key, studies.reverse(), subjects.reverse()).to_list()
    assert again == list(reversed(first))
    other = subject_pseudonyms(_key("x" * 64), studies, subjects).to_list()
    assert set(other).isdisjoint(first)  # another key, unrelated pseudonyms
    assert all(len(p) == 32 and int(p, 16) >= 0 for p in first)


def test_site_pseudonyms_keep_nulls_and_are_per_study() -> None:
    sites = site_pseudonyms(_key(), pl.Series(["A", "B", "A"]), pl.Series(["SITE-1", "SITE-1", None]))
    assert sites[2] is None
    assert sites[0] != sites[1] and sites[0].startswith("site-") and len(sites[0]) == 15


def test_date_shifts_are_fixed_per_subject_and_bounded() -> None:
    studies = pl.Series(["A"] * 300)
    subjects = pl.Series([str(i) for i in range(300)])
    shifts = date_shifts(_key(), studies, subjects, max_days=30)
    assert shifts.dtype == pl.Int32
    assert shifts.min() >= -30 and shifts.max() <= 30 and shifts.n_unique() > 30
    assert shifts.to_list() == date_shifts(_key(), studies, subjects, max_days=30).to_list()


@pytest.mark.parametrize("secret", [SECRET, "k" * 100])  # 100 bytes: longer than a SHA-256 block, hashed first
def test_bulk_pseudonyms_equal_the_per_value_formula(secret: str) -> None:
    """Messages built in polars and the bulk HMAC give what `pseudonymise` gives, escapes and duplicates included."""
    key = _key(secret)
    studies = ['S"1', "é\\x", None, "A\n\x00b", "x", "x", "\u2028", "😀", "t\x1f", "x"]
    subjects = ["a", "b\x1f", "c", None, "d", "d", "\x7f", 'q"', "", "e"]
    pairs = list(zip(studies, subjects, strict=True))

    def formula(domain: str) -> list[str | None]:
        return [None if a is None or b is None else pseudonymise(key, domain, [a, b]) for a, b in pairs]

    study, subject = pl.Series(studies, dtype=pl.String), pl.Series(subjects, dtype=pl.String)
    assert subject_pseudonyms(key, study, subject).to_list() == [h and h[:32] for h in formula("subject")]
    assert site_pseudonyms(key, study, subject).to_list() == [h and "site-" + h[:10] for h in formula("site")]
    shifts = [h and int(h[:12], 16) % 61 - 30 for h in formula("date-shift")]
    assert date_shifts(key, study, subject, max_days=30).to_list() == shifts
    distinct = [i for i, (a, b) in enumerate(pairs) if a is not None and b is not None and pairs.index((a, b)) == i]
    unique = subject_pseudonyms(key, study.gather(distinct), subject.gather(distinct))  # no join back
    assert unique.to_list() == [formula("subject")[i][:32] for i in distinct]  # type: ignore[index]
    assert subject_pseudonyms(key, study.head(0), subject.head(0)).to_list() == []
