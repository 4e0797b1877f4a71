"""Tests for decomp.data.cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from decomp.data import cache
from decomp.data.cache import cache_dir, cache_key, cached_arrays, load_entry, store_entry


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"


@pytest.mark.parametrize("value", [None, ""])
def test_default_cache_dir_is_home_cache(tmp_path, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("DECOMP_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("DECOMP_CACHE_DIR", value)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "decomp"


def test_default_cache_dir_is_used_by_store(tmp_path, monkeypatch):
    monkeypatch.delenv("DECOMP_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    key = cache_key({"a": 1})
    path = store_entry(key, {"x": np.arange(3)})
    assert path == tmp_path / ".cache" / "decomp" / f"{key}.npz"
    np.testing.assert_array_equal(load_entry(key)["x"], np.arange(3))


def test_key_is_canonical():
    key = cache_key({"a": 1, "b": (2, 3), "c": {"y": 1.5, "x": None}})
    assert key == cache_key({"c": {"x": None, "y": 1.5}, "b": [2, 3], "a": 1})
    assert key == cache_key({"a": np.int64(1), "b": np.array([2, 3]), "c": {"x": None, "y": 1.5}})
    assert len(key) == 64 and int(key, 16) >= 0


def test_key_depends_on_params_and_version(monkeypatch):
    key = cache_key({"a": 1})
    assert cache_key({"a": 2}) != key
    assert cache_key({"a": 1.0001}) != key
    monkeypatch.setattr(cache, "__version__", "999.0")
    assert cache_key({"a": 1}) != key


def test_key_depends_on_soundfont_size_and_mtime(tmp_path):
    font = tmp_path / "font.sf2"
    font.write_bytes(b"x" * 10)
    os.utime(font, ns=(1_000_000_000, 1_000_000_000))
    key = cache_key({"a": 1}, soundfont=font)
    assert key != cache_key({"a": 1})
    assert cache_key({"a": 1}, soundfont=font) == key
    os.utime(font, ns=(2_000_000_000, 2_000_000_000))
    touched = cache_key({"a": 1}, soundfont=font)
    assert touched != key
    font.write_bytes(b"x" * 11)
    os.utime(font, ns=(2_000_000_000, 2_000_000_000))
    assert cache_key({"a": 1}, soundfont=font) not in (key, touched)


def test_key_refuses_non_json_values():
    with pytest.raises(TypeError, match="JSON-like.*object"):
        cache_key({"a": object()})
    with pytest.raises(TypeError, match="params must be a mapping; got list"):
        cache_key([("a", 1)])


def test_store_and_load_round_trip(tmp_path):
    key = cache_key({"round": "trip"})
    arrays = {"audio": np.linspace(-1, 1, 11, dtype=np.float32), "n": np.array(3)}
    path = store_entry(key, arrays, midi_bytes=b"MThd-fake", directory=tmp_path)
    assert path == tmp_path / f"{key}.npz"
    assert (tmp_path / f"{key}.mid").read_bytes() == b"MThd-fake"
    loaded = load_entry(key, directory=tmp_path)
    assert loaded.keys() == arrays.keys()
    np.testing.assert_array_equal(loaded["audio"], arrays["audio"])
    assert loaded["audio"].dtype == np.float32
    # Only the entry's files remain: no temporary files.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.mid", f"{key}.npz"]


def test_load_missing_entry_is_none(tmp_path):
    assert load_entry(cache_key({"absent": True}), directory=tmp_path) is None


def test_bad_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="64-character hex digest.*'../evil'"):
        load_entry("../evil", directory=tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_entry_is_recomputed(tmp_path, damage):
    params = {"corrupt": damage}
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(1000.0)}

    first = cached_arrays(params, compute, directory=tmp_path)
    path = tmp_path / f"{cache_key(params)}.npz"
    content = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a zip file" * 10)
    elif damage == "truncate":
        path.write_bytes(content[: len(content) // 2])
    else:
        path.write_bytes(b"")
    assert load_entry(cache_key(params), directory=tmp_path) is None
    assert not path.exists()  # the bad entry was removed
    second = cached_arrays(params, compute, directory=tmp_path)
    assert len(calls) == 2
    np.testing.assert_array_equal(first["x"], second["x"])
    assert path.read_bytes() == content


def test_flipped_byte_in_data_is_detected(tmp_path):
    key = cache_key({"flip": 1})
    path = store_entry(key, {"x": np.zeros(4096)}, directory=tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the array payload: only the zip CRC catches it
    path.write_bytes(bytes(data))
    assert load_entry(key, directory=tmp_path) is None


def test_cache_hit_does_not_recompute(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.random.default_rng().normal(size=5)}

    first = cached_arrays({"hit": 1}, compute, directory=tmp_path)
    second = cached_arrays({"hit": 1}, compute, directory=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    key = cache_key({"interrupted": 1})

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez", failing_savez)
    with pytest.raises(KeyboardInterrupt):
        store_entry(key, {"x": np.arange(3)}, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert load_entry(key, directory=tmp_path) is None


def test_parallel_writers_leave_a_valid_entry(tmp_path):
    key = cache_key({"parallel": 1})
    value = np.arange(200_000, dtype=np.float64)
    errors = []

    def write():
        try:
            for _ in range(3):
                store_entry(key, {"x": value}, directory=tmp_path)
                loaded = load_entry(key, directory=tmp_path)
                # A reader sees either nothing (not yet written) or a complete entry.
                if loaded is not None:
                    np.testing.assert_array_equal(loaded["x"], value)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    np.testing.assert_array_equal(load_entry(key, directory=tmp_path)["x"], value)
    assert [p.name for p in Path(tmp_path).iterdir()] == [f"{key}.npz"]


def test_writable_cache_dir_creates_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.writable_cache_dir("models") == tmp_path / "cache" / "models"
    assert (tmp_path / "cache" / "models").is_dir()


@pytest.mark.parametrize("below", ["", "sub"])
def test_cache_dir_that_is_a_file_gives_one_clear_error(tmp_path, monkeypatch, below):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    root = blocker / below if below else blocker
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(root))
    with pytest.raises(OSError) as caught:
        store_entry(cache_key({"a": 1}), {"x": np.arange(3)})
    message = str(caught.value)
    assert f"the decomp cache folder {root} cannot be used" in message
    assert f"{blocker} is a file, not a folder" in message
    assert "set DECOMP_CACHE_DIR to a writable folder" in message
    assert "\n" not in message and ".part" not in message


def test_unwritable_cache_dir_gives_one_clear_error(tmp_path, monkeypatch):
    # Tests may run as root, for whom chmod does not deny: fake the refusal instead.
    monkeypatch.setenv("DECOMP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=(
            rf"decomp cache folder {tmp_path} cannot be used \(Permission denied\); "
            "set DECOMP_CACHE_DIR to a writable folder")):
        cache.writable_cache_dir("models")
