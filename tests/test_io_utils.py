"""Atomic outputs: complete or absent, never half-written; usual permissions."""

import os
import stat

import pytest

from tokenweight.io_utils import atomic_dir, atomic_file, atomic_write_json, atomic_write_text, fingerprint


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.txt") == 0o644
    assert mode(tmp_path / "d") == 0o755


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "old.bin").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as d:
            (d / "new.bin").write_text("2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    with atomic_dir(target) as d:
        (d / "new.bin").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_fingerprint_is_order_independent_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_clean_folder_temporaries_removes_only_what_killed_writers_left(tmp_path):
    from tokenweight.io_utils import clean_folder_temporaries

    (tmp_path / "results.json").write_text("{}")
    (tmp_path / ".plot.png.84_ffazb.png.tmp").write_bytes(b"half")
    (tmp_path / ".cache").mkdir()
    assert [p.name for p in clean_folder_temporaries(tmp_path)] == [".plot.png.84_ffazb.png.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache", "results.json"]
    assert clean_folder_temporaries(tmp_path / "missing") == []
