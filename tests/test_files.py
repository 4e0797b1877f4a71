"""The atomic writer: round trips, failures that keep the old file, concurrency, kills."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import decomp
from decomp import _files
from decomp._files import atomic_write, suffix_format, write_atomically

FILES_MODULE = Path(_files.__file__)
ROOT = FILES_MODULE.parent.parent


def leftovers(folder: Path) -> list[str]:
    """Temporary files of the writer still in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(_files.TEMPORARY_SUFFIX))


def test_round_trip_binary_and_text(tmp_path):
    binary = tmp_path / "new" / "folder" / "data.bin"
    with atomic_write(binary) as file:
        file.write(b"\x00\x01\x02")
    assert binary.read_bytes() == b"\x00\x01\x02"
    text = write_atomically(tmp_path / "notes.txt", lambda file: file.write("é ok\n"), "w")
    assert text == tmp_path / "notes.txt"
    assert text.read_text(encoding="utf-8") == "é ok\n"
    assert leftovers(tmp_path) == [] and leftovers(binary.parent) == []


def test_replaces_and_keeps_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    target = write_atomically(tmp_path / "new.bin", lambda file: file.write(b"new"))
    assert target.stat().st_mode == plain.stat().st_mode  # not the temporary's 0600
    target.chmod(0o640)
    write_atomically(target, lambda file: file.write(b"newer"))
    assert target.read_bytes() == b"newer"
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("interruption", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_inside_keeps_the_old_file_and_no_temporary(tmp_path, interruption):
    target = tmp_path / "result.npz"
    write_atomically(target, lambda file: np.savez(file, x=np.arange(5)))
    before = target.read_bytes()
    with pytest.raises(type(interruption)):
        with atomic_write(target) as file:
            file.write(b"half a new file")
            raise interruption
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []
    with np.load(target) as archive:
        assert archive["x"].tolist() == [0, 1, 2, 3, 4]


def test_a_failure_before_the_first_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="no data"):
        write_atomically(tmp_path / "out.bin", lambda file: (_ for _ in ()).throw(
            ValueError("no data")))
    assert list(tmp_path.iterdir()) == []


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"mode must be one of \('wb', 'w'\); got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(ValueError, match="encoding is for text mode"):
        with atomic_write(tmp_path / "x", encoding="utf-8"):
            pass


def test_a_parent_that_is_a_file_names_the_target(tmp_path):
    (tmp_path / "plain").write_text("x")
    target = tmp_path / "plain" / "sub" / "out.mid"
    with pytest.raises(NotADirectoryError) as caught:
        write_atomically(target, lambda file: file.write(b""))
    message = str(caught.value)
    assert str(target) in message and "is a file, not a folder" in message
    assert ".part" not in message and "\n" not in message


def test_a_target_that_is_a_folder(tmp_path):
    (tmp_path / "out.wav").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write .*out\.wav: it is a folder"):
        write_atomically(tmp_path / "out.wav", lambda file: file.write(b"x"))
    assert leftovers(tmp_path) == []


def test_an_unwritable_folder_names_the_target(tmp_path, monkeypatch):
    # Tests may run as root, for whom chmod does not deny: fake the refusal instead.
    def refuse(*args, dir, prefix, suffix, **kwargs):
        name = os.path.join(dir, prefix + "abc" + suffix)
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    target = tmp_path / "model.decomp"
    with pytest.raises(PermissionError) as caught:
        write_atomically(target, lambda file: file.write(b""))
    message = str(caught.value)
    assert f"cannot write {target}: the folder {tmp_path} is not writable" in message
    assert ".part" not in message


def test_a_full_disk_names_the_target_and_cleans_up(tmp_path):
    target = tmp_path / "big.bin"
    with pytest.raises(OSError, match=r"cannot write .*big\.bin: no space left") as caught:
        with atomic_write(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_suffix_format():
    assert suffix_format("a/song.FLAC") == "flac"
    assert suffix_format("song.wav", upper=True) == "WAV"
    assert suffix_format("noext") is None


def test_threads_writing_one_path_all_succeed(tmp_path):
    target = tmp_path / "shared.bin"
    versions = [bytes([index]) * 200_000 for index in range(8)]
    errors: list[BaseException] = []

    def writer(payload: bytes) -> None:
        try:
            for _ in range(10):
                write_atomically(target, lambda file: file.write(payload))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(version,)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in versions
    assert leftovers(tmp_path) == []


def test_processes_saving_one_model_path_all_succeed(tmp_path):
    target = tmp_path / "model.decomp"
    script = textwrap.dedent(f"""
        import numpy as np
        from decomp import NMF
        from decomp.persistence import save
        X = np.random.default_rng(0).random((12, 6))
        model = NMF(n_components=2, max_iter=3, random_state=0).fit(X)
        print("ready", flush=True)
        input()  # start saving together with the other process
        for _ in range(20):
            save(model, {str(target)!r})
    """)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=environment,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            _, stderr = child.communicate(timeout=120)
            assert child.returncode == 0, stderr
    finally:
        for child in children:
            child.kill()
            child.wait()
    model = decomp.load(target)
    assert model.components_.shape == (2, 6)
    assert leftovers(tmp_path) == []


SLOW_WRITER = """
import importlib.util, io, signal, sys, time
import numpy as np
signal.signal(signal.SIGINT, signal.default_int_handler)
spec = importlib.util.spec_from_file_location("_files", {module!r})
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
buffer = io.BytesIO()
np.savez(buffer, x=np.ones(2_000_000))  # a new, different version (16 MB)
payload = buffer.getvalue()
with files.atomic_write({target!r}) as file:
    for start in range(0, len(payload), 100_000):
        file.write(payload[start:start + 100_000])
        file.flush()
        if start == 0:
            print("writing", flush=True)
        time.sleep(0.05)
print("finished", flush=True)
"""


def kill_slow_writer(target: Path, signal_number: int) -> tuple[int, str, Path]:
    """Start SLOW_WRITER on ``target``, send ``signal_number`` mid-write, wait for it.

    Returns the child's exit status, its stderr and the temporary it was writing.
    """
    script = SLOW_WRITER.format(module=str(FILES_MODULE), target=str(target))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        (temporary,) = (target.parent / name for name in leftovers(target.parent))
        child.send_signal(signal_number)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    return child.returncode, stderr, temporary


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_writer_leaves_the_previous_complete_file(tmp_path, signal_number):
    target = tmp_path / "transcription.npz"
    write_atomically(target, lambda file: np.savez_compressed(file, x=np.arange(10)))
    before = target.read_bytes()
    returncode, stderr, temporary = kill_slow_writer(target, signal_number)
    assert temporary.name.startswith(".transcription.npz.")
    assert returncode != 0
    assert target.read_bytes() == before
    with np.load(target) as archive:
        assert archive["x"].tolist() == list(range(10))
    if signal_number == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr
        assert leftovers(tmp_path) == []  # the writer cleaned up after itself
    else:
        # SIGKILL gives no chance to clean up: only the hidden temporary may remain.
        assert sorted(p.name for p in tmp_path.iterdir()) == [temporary.name, target.name]


def test_writer_module_needs_only_the_standard_library():
    source = FILES_MODULE.read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from "))}
    assert imported <= {"__future__", "errno", "os", "stat", "tempfile", "collections",
                        "contextlib", "pathlib", "typing"}, imported
