"""The documentation's generated parts are fresh: results pages, figures, listening examples.

``benchmarks/docs_results.py`` writes the Results pages and figures from the benchmarks'
JSON, ``benchmarks/docs_audio.py`` the listening examples with the shipped models; both
outputs are committed. These tests fail while they are stale, and check the converter that
shows the notebooks on the site (``benchmarks/docs_notebooks.py``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
EXAMPLES = RESULTS / "examples"
MAX_EXAMPLE_BYTES = 1_500_000


docs_results = load_benchmark("docs_results")
docs_notebooks = load_benchmark("docs_notebooks")


def _nav_paths(entries) -> list[str]:
    paths = []
    for entry in entries:
        if isinstance(entry, str):
            paths.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                paths += _nav_paths(value) if isinstance(value, list) else [value]
    return paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_results_pages_are_fresh() -> None:
    stale = docs_results.stale()
    assert not stale, (
        "generated documentation is stale: " + ", ".join(f"docs/results/{name}"
                                                         for name in stale)
        + "; run `python benchmarks/docs_results.py` and commit the result.")


def test_stale_results_are_detected(tmp_path: Path) -> None:
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy)
    assert docs_results.stale(copy) == []
    path = copy / "separation-table-instruments.json"
    data = json.loads(path.read_text())
    # NMF's row: a bar only this table draws (a shipped row may come from another table).
    next(row for row in data["rows"] if row["method"] == "nmf")["si_sdr_improvement"] += 1.0
    path.write_text(json.dumps(data))
    stale = docs_results.stale(copy)
    assert "separation.md" in stale and "figures/separation-si-sdri.svg" in stale
    (copy / "figures" / "orphan.svg").write_text("<svg/>")
    assert "figures/orphan.svg" in docs_results.stale(copy)


def test_generated_pages_and_notebooks_are_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_paths(config["nav"])
    for page in docs_results.PAGES:
        assert f"results/{page}" in nav, f"results/{page} is missing from mkdocs.yml's nav"
    for path in docs_notebooks.notebooks():
        assert f"notebooks/{path.stem}.md" in nav, f"{path.name} has no page in the nav"
    assert "guide/own-recordings.md" in nav
    assert "benchmarks/docs_notebooks.py" in config.get("hooks", [])


def test_examples_were_made_by_the_shipped_models() -> None:
    record = json.loads((EXAMPLES / "examples.json").read_text())
    models = ROOT / "decomp" / "models"
    for name, model in record["models"].items():
        assert _sha256(models / model["file"]) == model["sha256"], (
            f"the shipped model {name!r} changed since the listening examples were made; run "
            "`python benchmarks/docs_audio.py && python benchmarks/docs_results.py`.")
    listed = {entry["file"]: entry for entry in record["files"]}
    for name, entry in listed.items():
        assert _sha256(EXAMPLES / name) == entry["sha256"], f"{name} is not the file recorded"
    present = {path.name for path in EXAMPLES.iterdir()} - {"index.md", "examples.json"}
    assert present == set(listed), f"unlisted or missing files: {present ^ set(listed)}"
    assert sum(entry["bytes"] for entry in listed.values()) <= MAX_EXAMPLE_BYTES
    page = (EXAMPLES / "index.md").read_text()
    sources = re.findall(r'<audio [^>]*src="([^"]+)"', page)
    assert sources and set(sources) <= set(listed)
    assert all(name.endswith(".ogg") for name in sources)


def _png() -> str:
    # A 1x1 PNG.
    return ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
            "RU5ErkJggg==")


def test_notebook_conversion() -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\nSee the [guide](../docs/guide/dds.md)."),
        nbformat.v4.new_code_cell("print('hi')\nplot()", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="hi\n"),
            nbformat.v4.new_output("stream", name="stderr",
                                   text="\x1b[31m 10%\r 50%\r100%\x1b[0m\n"),
            nbformat.v4.new_output("display_data", data={"image/png": _png(),
                                                         "text/plain": "<Figure>"}),
            nbformat.v4.new_output("execute_result", data={"text/plain": "42"},
                                   execution_count=1),
        ]),
        nbformat.v4.new_code_cell("s = '```'"),
    ]
    text, figures = docs_notebooks.convert(notebook, "nb", note="!!! note\n    hello")
    assert "[guide](../guide/dds.md)" in text
    assert text.index("# Title") < text.index("!!! note") < text.index("```python\nprint")
    assert "```text\nhi\n100%\n```" in text
    assert "![output of cell 1](nb/cell1-0.png)" in text and "<Figure>" not in text
    assert "```text\n42\n```" in text
    assert "````python\ns = '```'\n````" in text
    assert figures == {"nb/cell1-0.png": base64.b64decode(_png())}


def test_notebook_store_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_notebooks, "CACHE_DIR", tmp_path)
    path = tmp_path / "source" / "n.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), path)
    key = docs_notebooks.execution_key(path)
    assert docs_notebooks.stored(path) is None
    docs_notebooks.store(path, nbformat.v4.new_notebook(), key)
    assert docs_notebooks.stored(path) is not None
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_markdown_cell("changed"))
    nbformat.write(notebook, path)
    assert docs_notebooks.execution_key(path) != key
    assert docs_notebooks.stored(path) is None


def test_the_separation_page_names_the_saved_models_a_table_scored() -> None:
    tables = {path.name: json.loads(path.read_text())
              for path in RESULTS.glob("separation-table-*.json")}
    saved = {name: data["settings"]["model"] for name, data in tables.items()
             if data["settings"].get("model")}
    assert saved, "no separation table scored a saved model (--model)"
    page = docs_results.separation_page(docs_results.load_results()).text()
    for name, specs in saved.items():
        # The rerun command holds every --model, and each model's rows are on the page.
        rerun = next(line for line in page.splitlines() if f"--json docs/results/{name}`" in line)
        for spec in specs:
            assert f"--model {spec}" in rerun
            model = spec.partition("=")[0]
            assert any(row["method"] == model for row in tables[name]["rows"])
            assert f"| {model} | " in page


def test_the_separation_page_shows_each_tables_paired_comparison() -> None:
    tables = {path.name: json.loads(path.read_text())
              for path in RESULTS.glob("separation-table-*.json")}
    paired = {name: data["paired"] for name, data in tables.items() if data.get("paired")}
    assert paired, "no separation table recorded a paired comparison"
    page = docs_results.separation_page(docs_results.load_results()).text()
    for comparison in paired.values():
        for row in comparison["rows"]:
            assert (f"`{row['method']}` {row['mean']:+.2f} ± {docs_results.number(row['se'])} "
                    f"dB, {row['better']:.0%}") in page
        assert f"Paired with `{comparison['reference']}` on the same mixtures" in page


def test_the_augmentation_ablation_table_shows_every_run() -> None:
    data = json.loads((RESULTS / "augmentation-ablation.json").read_text())
    page = docs_results.separation_page(docs_results.load_results()).text()
    section = page.split("## Which augmentations help", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for variant, runs in data["variants"].items():
        label = docs_results.ablation_label(variant)
        for seed, run in runs.items():
            loss = docs_results.number(run["training"]["best_validation_loss"])
            assert any(row.startswith(f"| {label} | {seed} | {loss} |") for row in rows)
        if len(runs) > 1:  # a mean over the seeds, in bold
            mean = sum(run["training"]["best_validation_loss"]
                       for run in runs.values()) / len(runs)
            assert f"| **{label}** | **mean** | **{docs_results.number(mean)}** |" in section
    # The rerun commands make exactly the runs in the JSON, seed by seed.
    for seed in {seed for runs in data["variants"].values() for seed in runs}:
        variants = [variant for variant, runs in data["variants"].items() if seed in runs]
        assert f"--seeds {seed} --variants {' '.join(variants)}`" in section


def test_ablation_variants_turn_off_what_they_name(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    ablation = load_benchmark("augmentation_ablation")
    train_separators = sys.modules["train_separators"]
    parser = train_separators.build_parser()
    settings = argparse.Namespace(work_dir=Path("ablation"), max_epochs=24,
                                  learning_rate_decay=8, n_test=20)
    for variant in ablation.VARIANTS:
        # The command line of each run is one that train_separators.py accepts.
        command = ablation.command(settings, variant, 1)
        assert command[1].endswith("train_separators.py")
        args = parser.parse_args(command[2:])
        assert (args.seed, args.max_epochs, args.validation_font) == (1, 24, "timgm6mb")
        assert args.checkpoint_dir == Path("ablation") / "seed1" / variant
        augmentation = train_separators.augmentation(args)
        if variant == "none":
            assert augmentation is None
            continue
        for kind in train_separators.AUGMENTATIONS:
            expected = 0.0 if variant == f"no-{kind}" else 0.5
            assert getattr(augmentation, f"{kind}_probability") == expected


def test_benchmark_machine_records_the_hardware() -> None:
    import torch

    results = load_benchmark("_results")
    described = results.machine(2)
    assert described["threads"] == 2
    assert described["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(described["processor"], str)
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        # platform.processor() is empty on Linux: the name comes from /proc/cpuinfo.
        assert described["processor"]
    line = docs_results.machine({"machine": described})
    assert f"torch CPU capability {described['cpu_capability']}" in line
    assert described["processor"] in line
    # Older JSON (an empty processor, no capability) keeps its old line.
    assert docs_results.machine({"machine": {"cpus": 2, "processor": "", "torch": "2.13"}}) \
        == "2 CPU cores, torch 2.13"


def test_best_run_targets_judge_each_model_on_its_best_run() -> None:
    def run(model: str, score: float, nmf: float | None = 5.0) -> dict:
        methods = {model: {"si_sdr_improvement": score}}
        if nmf is not None:
            methods["nmf"] = {"si_sdr_improvement": nmf}
        return {"settings": {"model": model}, "results": {"instruments-2": methods}}

    runs = {"train-separators-a.json": run("sop", 6.0),
            "train-separators-b.json": run("sop", 7.5),
            "train-separators-c.json": run("sop", 99.0, nmf=None),  # no NMF in that run
            "train-separators-d.json": run("blockvae", 6.9)}
    lines = docs_results.best_run_targets(runs)
    assert lines == [
        "blockvae 2-source instruments, best of 1 training run (`d`): +1.90 dB SI-SDRi over "
        "NMF in the same run (target >= +2): FAIL",
        "sop 2-source instruments, best of 2 training runs (`b`): +2.50 dB SI-SDRi over NMF "
        "in the same run (target >= +2): PASS"]


def test_benchmark_settings_are_json_values() -> None:
    results = load_benchmark("_results")
    args = argparse.Namespace(json=Path("out.json"), seed=0, threads=1)
    assert results.json_settings(args) == {"json": "out.json", "seed": 0, "threads": 1}
    assert results.json_settings(args, leave_out=("threads",)) == {"json": "out.json", "seed": 0}
    json.dumps(results.json_settings(args))  # writable as it is


@pytest.mark.parametrize("name", ["dds-table.json", "dds-table-60.json"])
def test_the_transcription_page_shows_the_dds_tables_paired_comparison(name: str) -> None:
    data = json.loads((RESULTS / name).read_text())
    assert data["paired"]["rows"], f"{name} recorded no paired comparison"
    page = docs_results.transcription_page(docs_results.load_results()).text()
    assert f"Frame F1 paired with `{data['paired']['reference']}` on the same chords" in page
    for row in data["paired"]["rows"]:
        assert (f"`{row['method']}` P{row['polyphony']} {row['mean']:+.3f} ± "
                f"{docs_results.number(row['se'], 3)} ({row['above']:.0%})") in page
    # Each row's best-threshold F1, the diagnostic column, is in its chords table.
    for row in data["chords"]:
        assert (f"| `{row['method']}` | P{row['polyphony']} |" in page
                and f"| {docs_results.number(row['oracle_f1'], 3)} |" in page)
    assert f"--json docs/results/{name}`" in page


def test_each_dds_budget_sweep_shows_the_command_that_wrote_it() -> None:
    page = docs_results.transcription_page(docs_results.load_results()).text()
    for name, _ in docs_results.DDS_BUDGET_SWEEPS:
        command = json.loads((RESULTS / name).read_text())["settings"]["command"]
        assert command.startswith("python benchmarks/dds_budget.py ")
        assert command.endswith(f"--json docs/results/{name}")
        assert f"Rerun: `{command}`" in page


def test_a_budget_sweep_of_components_per_source_shows_them_in_its_table() -> None:
    page = docs_results.transcription_page(docs_results.load_results()).text()
    for name in ("dds-budget-dds2-components.json", "dds-budget-dds3-components.json"):
        data = json.loads((RESULTS / name).read_text())
        ((method, best),) = data["best"].items()
        assert (f"{best['n_components_per_source']} components per source, warm start "
                f"{best['warm_start_iterations']}") in page
        for row in data["rows"]:
            assert (f"| {row['latent_learning_rate']:g} | {row['n_components_per_source']} | "
                    f"{row['warm_start_iterations']} | {row['sustain_ratio']:.2f} | "
                    f"{row['validation_f1']:.4f} |") in page
    # A sweep written before the option has no components column.
    older = docs_results.Page("transcription.md")
    record = json.loads((RESULTS / "dds-budget-dds2.json").read_text())
    docs_results._dds_budget_notes(older, record, "dds-budget-dds2.json")
    assert "components per source" not in older.text()
    assert "| iterations | latent step | warm start |" in older.text()


def test_a_benchmark_records_its_command_line_quoted_for_a_shell() -> None:
    command_line = load_benchmark("_results").command_line
    assert command_line("dds_budget.py", ["--methods", "dds3", "--json", "a b.json"]) == \
        "python benchmarks/dds_budget.py --methods dds3 --json 'a b.json'"
    assert command_line("dds_budget.py", []) == "python benchmarks/dds_budget.py"


def test_the_font_gap_section_subtracts_the_held_out_font_from_the_training_fonts() -> None:
    data = json.loads((RESULTS / "separation-font-gap.json").read_text())
    score = {(row["method"], row["test_set"]): row["si_sdr_improvement"]
             for row in data["rows"]}
    gap = (score[("shipped-slots", "fluidr3-instruments-3")]
           + score[("shipped-slots", "timgm6mb-instruments-3")]) / 2 \
        - score[("shipped-slots", "instruments-3")]
    page = docs_results.separation_page(docs_results.load_results()).text()
    section = page.split("## The font gap")[1].split("\n## ")[0]
    held_out = docs_results.number(score[("shipped-slots", "instruments-3")])
    assert (f"| shipped instruments-slots (blind: the AudioSlots network alone) | 3 | {held_out} | "
            f"{docs_results.number(score[('shipped-slots', 'fluidr3-instruments-3')])} | "
            f"{docs_results.number(score[('shipped-slots', 'timgm6mb-instruments-3')])} | "
            f"{docs_results.number(gap)} |") in section
    assert f"Rerun: `{data['settings']['command']}`" in section
    assert "--training-font-tests" in data["settings"]["command"]


def test_a_separation_table_shows_the_command_line_it_recorded() -> None:
    row = {"method": "shipped", "test_set": "instruments-2", "n_items": 1, "sdr": 1.0,
           "sir": 1.0, "sar": 1.0, "si_sdr": 1.0, "si_sdr_improvement": 1.0}
    command = "python benchmarks/separation_table.py --methods shipped --n-test 1"
    recorded = {"settings": {"methods": ["shipped"], "datasets": ["instruments"],
                             "command": command}, "rows": [row]}
    page = docs_results.separation_page({"separation-table-x.json": recorded}).text()
    assert f"Rerun: `{command}`." in page
    del recorded["settings"]["command"]  # runs before 2026-12-04: rebuilt from the settings
    page = docs_results.separation_page({"separation-table-x.json": recorded}).text()
    assert ("Rerun: `python benchmarks/separation_table.py --methods shipped --datasets "
            "instruments --json docs/results/separation-table-x.json`.") in page


def test_the_transcription_page_shows_every_held_out_piece() -> None:
    data = json.loads((RESULTS / "dds-table.json").read_text())
    seeds = data["settings"]["piece_seeds"]
    assert len(seeds) > 1
    page = docs_results.transcription_page(docs_results.load_results()).text()
    assert f"seeds {seeds[0]}–{seeds[-1]}), means over the pieces" in page
    assert "| method | " + " | ".join(f"seed {seed}" for seed in seeds) + " |" in page
    for method in dict.fromkeys(row["method"] for row in data["pieces"]):
        scores = [row["f1"] for row in data["pieces"] if row["method"] == method]
        assert (f"| `{method}` | " + " | ".join(docs_results.number(score, 3)
                                                for score in scores) + " |") in page
    assert f"--piece-seeds {' '.join(map(str, seeds))}" in page


def test_a_single_held_out_piece_without_a_seed_is_shown_once() -> None:
    # Runs before 2026-12-05 recorded one piece (seed 1) and no seed.
    page = docs_results.Page("transcription.md")
    pieces = [{"method": method, "bars": 8, "seconds": 19.7,
               **{key: 0.5 for key, _ in docs_results.DDS_TABLE_METRICS}}
              for method in ("nmf", "dds3")]
    docs_results._dds_pieces_tables(page, pieces)
    text = page.text()
    assert "Held-out pieces (8 bars, seed 1), means over the pieces:" in text
    assert "| `dds3` | 1 | 0.500 |" in text
    assert "Frame F1 per piece" not in text
