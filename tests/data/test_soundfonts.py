"""Tests for decomp.data.soundfonts."""

from __future__ import annotations

from pathlib import Path

import pytest

from decomp.data import soundfonts
from decomp.data.soundfonts import SOUNDFONTS, available_soundfonts, resolve_soundfont
from decomp.exceptions import MissingDependencyError

from .conftest import requires_font


def test_known_names_and_packages():
    assert set(SOUNDFONTS) == {"fluidr3", "timgm6mb", "musescore-lite"}
    assert SOUNDFONTS["fluidr3"].debian_package == "fluid-soundfont-gm"
    assert SOUNDFONTS["timgm6mb"].debian_package == "timgm6mb-soundfont"
    assert SOUNDFONTS["musescore-lite"].debian_package == "musescore-general-soundfont-small"


@pytest.mark.parametrize("name", sorted(SOUNDFONTS))
def test_resolve_known_name(name):
    if name not in available_soundfonts():
        pytest.skip(f"{name} not installed")
    path = resolve_soundfont(name)
    assert path.is_absolute() and path.is_file()
    assert path.suffix in (".sf2", ".sf3")


@requires_font("timgm6mb")
def test_resolve_existing_path_as_str_and_path(tmp_path):
    copy = tmp_path / "Font.SF2"
    copy.symlink_to(SOUNDFONTS["timgm6mb"].path)
    assert resolve_soundfont(str(copy)) == copy.resolve()
    assert resolve_soundfont(copy) == copy.resolve()


def test_available_soundfonts_lists_installed_files_in_order():
    names = available_soundfonts()
    assert names == [n for n in SOUNDFONTS if SOUNDFONTS[n].path.is_file()]


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="fluidr3.*musescore-lite.*timgm6mb") as info:
        resolve_soundfont("steinway")
    assert "'steinway'" in str(info.value)


def test_wrong_suffix_is_refused(tmp_path):
    path = tmp_path / "font.txt"
    path.write_text("not a font")
    with pytest.raises(ValueError, match=r"\.sf2/\.sf3"):
        resolve_soundfont(path)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SoundFont file at"):
        resolve_soundfont(tmp_path / "absent.sf2")


@pytest.mark.parametrize("value", [None, 3, ["fluidr3"]])
def test_wrong_type_is_refused(value):
    with pytest.raises(TypeError, match="soundfont must be a SoundFont name or a path"):
        resolve_soundfont(value)


def test_missing_known_font_names_debian_package(monkeypatch, tmp_path):
    missing = soundfonts.SoundFont("fluidr3", tmp_path / "gone.sf2", "fluid-soundfont-gm")
    monkeypatch.setitem(soundfonts.SOUNDFONTS, "fluidr3", missing)
    with pytest.raises(MissingDependencyError, match="apt-get install fluid-soundfont-gm"):
        resolve_soundfont("fluidr3")
    assert "fluidr3" not in available_soundfonts()
    assert isinstance(missing.path, Path)
