"""General-MIDI SoundFonts installed from Debian packages, by short name.

Training and test data use different fonts (see :mod:`decomp.data.protocol`), so every
reported figure is measured under a timbre shift.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from decomp.exceptions import MissingDependencyError

__all__ = ["SoundFont", "SOUNDFONTS", "resolve_soundfont", "available_soundfonts"]


@dataclass(frozen=True)
class SoundFont:
    """A SoundFont that a Debian package installs.

    Attributes
    ----------
    name : str
        Short name used throughout decomp (``"fluidr3"``).
    path : pathlib.Path
        Where the Debian package puts the file.
    debian_package : str
        The package to ``apt-get install`` when the file is missing.
    """

    name: str
    path: Path
    debian_package: str


SOUNDFONTS: dict[str, SoundFont] = {
    font.name: font
    for font in (
        SoundFont("fluidr3", Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), "fluid-soundfont-gm"),
        SoundFont("timgm6mb", Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont"),
        SoundFont(
            "musescore-lite",
            Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
            "musescore-general-soundfont-small",
        ),
    )
}
"""Known fonts by short name. Looked up at call time, so tests may patch it."""

_SUFFIXES = (".sf2", ".sf3")


def resolve_soundfont(name_or_path: str | os.PathLike) -> Path:
    """Return the file of a SoundFont given by short name or path.

    Parameters
    ----------
    name_or_path : str or path-like
        A key of :data:`SOUNDFONTS` (``"fluidr3"``, ``"timgm6mb"``, ``"musescore-lite"``) or
        the path of an existing ``.sf2``/``.sf3`` file.

    Returns
    -------
    pathlib.Path
        The absolute path of the font file.

    Raises
    ------
    TypeError
        If ``name_or_path`` is neither a string nor a path.
    ValueError
        If it is neither a known name nor a path ending in ``.sf2``/``.sf3``.
    MissingDependencyError
        If a known font's file is missing; the message names the Debian package.
    FileNotFoundError
        If a path is given and no file exists there.

    Examples
    --------
    >>> resolve_soundfont("timgm6mb").name
    'TimGM6mb.sf2'
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            "soundfont must be a SoundFont name or a path to a .sf2/.sf3 file; "
            f"got {type(name_or_path).__name__}."
        )
    if isinstance(name_or_path, str) and name_or_path in SOUNDFONTS:
        font = SOUNDFONTS[name_or_path]
        if not font.path.is_file():
            raise MissingDependencyError(
                f"SoundFont {font.name!r} is not installed: no file at {font.path}. "
                f"Install it with `apt-get install {font.debian_package}`."
            )
        return font.path.resolve()
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(
            f"soundfont must be one of {sorted(SOUNDFONTS)} or a path to a .sf2/.sf3 file; "
            f"got {os.fspath(name_or_path)!r}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"soundfont: no SoundFont file at {os.fspath(path)!r}.")
    return path.resolve()


def available_soundfonts() -> list[str]:
    """Names of the known SoundFonts whose files are installed, in :data:`SOUNDFONTS` order.

    Examples
    --------
    >>> set(available_soundfonts()) <= set(SOUNDFONTS)
    True
    """
    return [name for name, font in SOUNDFONTS.items() if font.path.is_file()]
