"""decomp.batch: inputs, the manifest, resuming, and Ray runs equal to sequential ones."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from decomp import batch
from decomp.audio import write_audio
from decomp.batch import SeparationJob, TranscriptionJob, find_audio, read_manifest
from decomp.cli import main
from tests.conftest import save_tiny_separator


@pytest.fixture
def corpus(tmp_path, tiny_chords, tiny_transcriber):
    """A folder of three recordings (two in a sub-folder), a bad file and a saved model."""
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    audio, rate = tiny_chords.audio, tiny_chords.sample_rate
    files = [write_audio(folder / "a.wav", audio, rate),
             write_audio(folder / "sub" / "b.wav", audio[: len(audio) // 2], rate),
             write_audio(folder / "sub" / "c.flac", audio[len(audio) // 3:], rate)]
    (folder / "notes.txt").write_text("not audio")
    model = tiny_transcriber.save(tmp_path / "model.decomp")
    return {"folder": folder, "files": files, "model": model, "tmp": tmp_path}


def _bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())
            if path.name != "manifest.jsonl"}


# --- inputs --------------------------------------------------------------------------------
def test_folders_yield_every_audio_extension_in_any_case(tmp_path):
    from decomp.batch import AUDIO_EXTENSIONS

    names = [f"take{index}{extension.upper() if index % 2 else extension}"
             for index, extension in enumerate(AUDIO_EXTENSIONS)]
    for name in [*names, "cover.jpg", "take.mp4"]:
        (tmp_path / name).write_bytes(b"")  # only the names are searched
    assert ".mp3" in AUDIO_EXTENSIONS
    assert find_audio([tmp_path]) == sorted(tmp_path / name for name in names)


def test_find_audio_expands_files_folders_and_patterns(corpus):
    folder, (a, b, c) = corpus["folder"], corpus["files"]
    assert find_audio([folder]) == [a, b, c]  # recursive, sorted, audio only
    assert find_audio([os.fspath(folder / "**" / "*.wav")]) == [a, b]
    assert find_audio([os.fspath(folder / "sub" / "*")]) == [b, c]
    # Each file once, at its first place; an explicit file whatever its extension.
    assert find_audio([b, folder]) == [b, a, c]
    assert find_audio([folder / "notes.txt"]) == [folder / "notes.txt"]
    missing = folder / "missing.wav"
    assert find_audio([missing]) == [missing]  # kept: its run fails and says why
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_audio([missing], missing="raise")
    with pytest.raises(FileNotFoundError, match="matches no audio"):
        find_audio([os.fspath(folder / "*.mp4")])
    empty = corpus["tmp"] / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no audio"):
        find_audio([empty])


# --- the manifest and resuming -------------------------------------------------------------
def test_a_run_writes_a_manifest_and_resumes(corpus):
    folder, model = corpus["folder"], os.fspath(corpus["model"])
    bad = folder / "broken.wav"
    bad.write_bytes(b"RIFF but not a wave file")
    out = corpus["tmp"] / "out"
    job = TranscriptionJob(model=model)
    first = batch.run(job, [folder], out, progress=False)
    assert (first.done, first.failed, first.skipped) == (3, 1, [])
    assert first.summary() == f"3 done, 1 failed: see {out / 'manifest.jsonl'}"
    latest = read_manifest(out)
    assert set(latest) == {os.fspath(path.resolve()) for path in [*corpus["files"], bad]}
    record = latest[os.fspath(bad.resolve())]
    assert record["status"] == "failed" and "broken.wav" in record["error"]
    done = latest[os.fspath(corpus["files"][0].resolve())]
    assert done["status"] == "done" and done["error"] is None
    assert sorted(Path(output).name for output in done["outputs"]) == ["a.mid", "a.npz"]
    assert done["seconds"] > 0 and done["duration_s"] > 0 and done["settings"]

    # Again: the done inputs are skipped, the failed one is retried (and fails again).
    again = batch.run(job, [folder], out, progress=False)
    assert len(again.skipped) == 3 and [r["input"] for r in again.records] == [
        os.fspath(bad.resolve())]
    # Another setting is another result: everything is redone.
    changed = batch.run(dataclasses.replace(job, threshold=0.5), [folder], out, progress=False)
    assert changed.skipped == [] and changed.done == 3
    # A missing output is redone; force redoes all.
    (out / "b.npz").unlink()
    resumed = batch.run(dataclasses.replace(job, threshold=0.5), [folder], out, progress=False)
    assert [Path(r["input"]).name for r in resumed.records] == ["broken.wav", "b.wav"]
    forced = batch.run(job, [folder], out, force=True, progress=False)
    assert len(forced.records) == 4 and forced.skipped == []
    # The manifest is append-only JSON lines: one line per processed input.
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4 + 1 + 4 + 2 + 4
    assert all(json.loads(line)["status"] in ("done", "failed") for line in lines)


def test_a_cut_manifest_line_is_skipped_with_a_warning(corpus):
    out = corpus["tmp"] / "out"
    batch.run(TranscriptionJob(model=os.fspath(corpus["model"])), corpus["files"][:1], out,
              progress=False)
    with open(out / "manifest.jsonl", "a") as file:
        file.write('{"input": "cut in the midd')
    with pytest.warns(RuntimeWarning, match="line 2"):
        assert len(read_manifest(out)) == 1


def test_the_python_api_returns_the_records(corpus):
    out = corpus["tmp"] / "out"
    records = batch.transcribe(corpus["folder"], out, model=os.fspath(corpus["model"]),
                               save_notes=True, progress=False)
    assert [Path(record["input"]).name for record in records] == ["a.wav", "b.wav", "c.flac"]
    assert all(record["status"] == "done" for record in records)
    assert (out / "a.csv").read_text().startswith("onset_s,offset_s,pitch,velocity")
    # Run again: nothing to do, the same records.
    assert batch.transcribe(corpus["folder"], out, model=os.fspath(corpus["model"]),
                            save_notes=True, progress=False) == records


def test_separation_jobs_record_their_stems(tmp_path):
    model = save_tiny_separator(tmp_path)
    mixture = (0.1 * np.random.default_rng(1).standard_normal(3000)).astype(np.float32)
    audio = write_audio(tmp_path / "mix.wav", mixture, 8000)
    records = batch.separate([audio], tmp_path / "stems", model=os.fspath(model),
                             progress=False)
    assert [Path(output).name for output in records[0]["outputs"]] == ["mix-0.wav",
                                                                        "mix-1.wav"]
    assert SeparationJob(model=os.fspath(model)).settings()["model"].startswith("file:")


def test_the_command_line_takes_folders_and_reports_a_summary(corpus, capsys):
    out = corpus["tmp"] / "out"
    command = ["transcribe", os.fspath(corpus["folder"]), "--model",
               os.fspath(corpus["model"]), "--out", os.fspath(out), "--no-progress"]
    assert main(command) == 0
    assert "3 done: see" in capsys.readouterr().err
    assert main(command) == 0
    assert "0 done, 3 skipped" in capsys.readouterr().err
    assert main([*command, "--force", "-q"]) == 0
    assert capsys.readouterr().err == ""  # -q: errors only


def test_jobs_above_one_without_ray_is_a_clear_error(corpus, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["transcribe", os.fspath(corpus["folder"]), "--model",
                 os.fspath(corpus["model"]), "--out", os.fspath(corpus["tmp"] / "out"),
                 "--jobs", "2", "--no-progress"]) == 2
    assert "pip install" in capsys.readouterr().err


# --- Ray -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CrashingJob(TranscriptionJob):
    """Kills its worker process on inputs named ``crash.wav`` (a worker lost mid-run)."""

    def run(self, transcriber, path, out_dir):
        if path.name == "crash.wav":
            os._exit(1)
        return super().run(transcriber, path, out_dir)


@pytest.mark.slow
def test_ray_runs_equal_sequential_ones_byte_for_byte_and_survive_a_crash(corpus):
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")

    # The crashing job is defined here: ship it to the workers by value, not by import.
    cloudpickle.register_pickle_by_value(__import__(__name__))
    import torch

    model = os.fspath(corpus["model"])
    sequential, parallel = corpus["tmp"] / "sequential", corpus["tmp"] / "parallel"
    job = TranscriptionJob(model=model, save_notes=True)
    # A worker computes with one torch thread; so does the sequential reference here
    # (with more threads the float sums of the activations may differ in the last bits).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert batch.run(job, [corpus["folder"]], sequential, progress=False).done == 3
    finally:
        torch.set_num_threads(threads)
    result = batch.run(job, [corpus["folder"]], parallel, jobs=2, progress=False)
    assert result.done == 3 and not ray.is_initialized()  # the local Ray is shut down
    assert _bytes(parallel) == _bytes(sequential)
    # With this process's own threads the notes are still the same, to the byte.
    default = corpus["tmp"] / "default-threads"
    batch.run(job, [corpus["folder"]], default, progress=False)
    notes = {name: data for name, data in _bytes(default).items()
             if name.endswith((".mid", ".csv"))}
    assert notes == {name: data for name, data in _bytes(parallel).items() if name in notes}
    assert len(notes) == 6
    workers = {record["pid"] for record in result.records}
    assert os.getpid() not in workers
    # Each worker loaded the model once, for its first input.
    assert sum(record["loaded_model"] for record in result.records) == len(workers)
    # A worker that dies marks its input failed; the others are done.
    crash = write_audio(corpus["folder"] / "crash.wav", np.zeros(1600, np.float32), 16000)
    crashing = batch.run(CrashingJob(model=model), [corpus["folder"]], corpus["tmp"] / "c",
                         jobs=2, progress=False)
    status = {Path(record["input"]).name: record["status"] for record in crashing.records}
    assert status == {"a.wav": "done", "b.wav": "done", "c.flac": "done",
                      "crash.wav": "failed"}
    lost = next(r for r in crashing.records if Path(r["input"]) == crash.resolve())
    assert lost["error"].startswith("worker lost")


def test_threads_set_the_transcribers_n_threads_outside_the_settings_hash(corpus):
    model = os.fspath(corpus["model"])
    assert TranscriptionJob(model=model).load().n_threads == 1  # the transcriber's own
    assert TranscriptionJob(model=model, threads=2).load().n_threads == 2
    # Threads do not change what is written, so a run with other threads is not redone.
    assert (TranscriptionJob(model=model, threads=2).settings()
            == TranscriptionJob(model=model).settings())


def test_a_loaded_model_is_reused_only_with_the_same_threads(corpus):
    model = os.fspath(corpus["model"])
    first = batch.preload(TranscriptionJob(model=model))
    assert batch.preload(TranscriptionJob(model=model)) is first  # loaded once
    other = batch.preload(TranscriptionJob(model=model, threads=2))
    assert other is not first and other.n_threads == 2
