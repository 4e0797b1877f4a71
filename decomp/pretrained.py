"""The models shipped inside the package, loaded by name: :func:`pretrained`.

One table, :data:`SHIPPED_MODELS`, maps each name to its file in ``decomp/models/`` and a
one-line description; ``benchmarks/train_default_models.py`` writes the files. A name
that is not in the table is read as the path of a ``.decomp`` file, so
``pretrained("instruments")`` and ``pretrained("runs/mine.decomp")`` are one call.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

__all__ = [
    "SHIPPED_MODELS",
    "SHIPPED_SEPARATORS",
    "pretrained",
    "pretrained_file",
    "shipped_models",
]

SHIPPED_MODELS: dict[str, tuple[str, str]] = {
    "instruments": ("separator-instruments.decomp",
                    "blind separator of 2-3 instruments, the most accurate: "
                    "'instruments-slots' (refining where it counts three), "
                    "'instruments-count' and 'instruments-nmf' averaged, weighted by the "
                    "count (SeparatorEnsemble)"),
    "instruments-slots": ("separator-instruments-slots.decomp",
                          "blind separator of 2-3 instruments, the fastest (AudioSlots, 3 "
                          "unordered outputs)"),
    "instruments-count": ("separator-instruments-count.decomp",
                          "separator of 2-3 instruments told how many play, or counting them "
                          "(MHUNet, count_sources)"),
    "instruments-ensemble": ("separator-instruments-ensemble.decomp",
                             "blind separator of 2-3 instruments: 'instruments-slots' and "
                             "'instruments-count' averaged, weighted by the count "
                             "(SeparatorEnsemble)"),
    "instruments-nmf": ("separator-instruments-nmf.decomp",
                        "blind NMF separator of 3 of the 10 training instruments, chosen "
                        "per mixture (NMFSeparator, n_sources=3)"),
    "speech": ("separator-speech.decomp",
               "blind separator of two speakers (MHUNet, 2 unordered outputs)"),
    "piano-nmf": ("piano-nmf.decomp",
                  "piano transcriber: NMF on a fixed dictionary of rendered notes (the default)"),
    "piano-dds2": ("piano-dds2.decomp", "piano transcriber: DDS-2, per-note RealNVP flows"),
    "piano-dds3": ("piano-dds3.decomp", "piano transcriber: DDS-3, one conditional Glow"),
}
"""Shipped model names -> (file name in ``decomp/models/``, one-line description)."""

SHIPPED_SEPARATORS = ("instruments", "instruments-slots", "instruments-count",
                      "instruments-ensemble", "instruments-nmf", "speech")
"""The names in :data:`SHIPPED_MODELS` that are separators (``decomp separate --model``)."""

_REBUILD = "python benchmarks/train_default_models.py"


def _models_dir() -> Path:
    """The folder of the shipped model files (inside the installed package)."""
    return Path(__file__).resolve().parent / "models"


def shipped_models() -> tuple[str, ...]:
    """The names :func:`pretrained` knows, in :data:`SHIPPED_MODELS` order.

    Their files may be missing from an installation (see :func:`pretrained`).

    Examples
    --------
    >>> shipped_models()
    ('instruments', 'instruments-slots', 'instruments-count', 'instruments-ensemble', \
'instruments-nmf', 'speech', 'piano-nmf', 'piano-dds2', 'piano-dds3')
    """
    return tuple(SHIPPED_MODELS)


def _looks_like_a_path(text: str) -> bool:
    separators = {os.sep, os.altsep or os.sep, "/"}
    return (any(separator in text for separator in separators)
            or text.endswith(".decomp") or os.path.exists(text))


def pretrained_file(name_or_path: str | os.PathLike) -> Path:
    """The model file that ``name_or_path`` stands for, without reading it.

    The rule of :func:`pretrained`: an ``os.PathLike`` is a path; a string that is a
    name in :data:`SHIPPED_MODELS` is that shipped model (even if a file of that name
    exists: write ``./instruments`` for the file); any other string is a path if it
    contains a path separator, ends in ``.decomp`` or names an existing file or folder,
    and an unknown model name otherwise.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A shipped model's name or a model file's path.

    Returns
    -------
    Path
        The shipped model's file in the package (which may be missing), or the path as
        given (which may not exist: :func:`decomp.load` says so).

    Raises
    ------
    TypeError
        If ``name_or_path`` is neither a ``str`` nor an ``os.PathLike``.
    ValueError
        If it is a string that is neither a shipped name nor path-like (one line naming
        the shipped models, with the closest name when one is close).

    Examples
    --------
    >>> pretrained_file("instruments").name
    'separator-instruments.decomp'
    >>> pretrained_file("runs/mine.decomp").as_posix()
    'runs/mine.decomp'
    >>> pretrained_file("instrumnts")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'instrumnts' (did you mean 'instruments'?); shipped models: \
instruments, instruments-slots, instruments-count, instruments-ensemble, instruments-nmf, \
speech, piano-nmf, piano-dds2, piano-dds3 (or give the path of a .decomp file).
    """
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError("name_or_path must be a shipped model's name (str) or a path; got "
                        f"{type(name_or_path).__name__}.")
    if name_or_path in SHIPPED_MODELS:
        return _models_dir() / SHIPPED_MODELS[name_or_path][0]
    if _looks_like_a_path(name_or_path):
        return Path(name_or_path)
    close = difflib.get_close_matches(name_or_path, list(SHIPPED_MODELS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {name_or_path!r}{hint}; shipped models: "
                     f"{', '.join(SHIPPED_MODELS)} (or give the path of a .decomp file).")


def with_article(name: str) -> str:
    """``"an AudioSlots"``, ``"a PianoTranscriber"``, ``"an NMFSeparator"``: the article as
    the name is read (an initialism is spelled out: en-em-ef)."""
    initialism = len(name) > 1 and name[:2].isupper()
    vowel_sound = name[:1] in "AEIOU" or (initialism and name[:1] in "FHLMNRSX")
    return f"{'an' if vowel_sound else 'a'} {name}"


def pretrained(name_or_path: str | os.PathLike, *, kind: type | tuple[type, ...] | None = None
               ) -> Any:
    """Load a shipped model by name, or any saved model by path.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A name from :func:`shipped_models` (``"instruments"``, ``"speech"``,
        ``"piano-nmf"``, ``"piano-dds2"``, ``"piano-dds3"``) or the path of a ``.decomp``
        file. A known name wins; any other string containing a path separator, ending in
        ``.decomp`` or naming an existing file is a path (:func:`pretrained_file` spells
        out the rule).
    kind : type or tuple of types, optional
        The class(es) the model must be an instance of, e.g.
        ``(AmortizedSeparator, NMFSeparator)``. Default: any decomp model.

    Returns
    -------
    model
        The fitted model, as :func:`decomp.load` restores it.

    Raises
    ------
    ValueError
        If ``name_or_path`` is neither a shipped name nor a path (one line naming the
        shipped models).
    FileNotFoundError
        If a shipped model's file is missing from this installation (the message says
        how to rebuild it), or nothing exists at the path.
    ModelFileError
        If the file is corrupt, foreign or from an incompatible version, or holds a
        model that is not of ``kind``: its ``reason`` then reads e.g. ``"holds a
        PianoTranscriber, not an AmortizedSeparator or an NMFSeparator"``.

    Examples
    --------
    >>> import tempfile
    >>> from decomp import NMF, load, pretrained
    >>> folder = tempfile.mkdtemp()
    >>> path = NMF(max_iter=5, random_state=0).fit([[1.0, 2.0], [2.0, 1.0]]).save(
    ...     f"{folder}/nmf.decomp")
    >>> type(pretrained(path)).__name__  # a path still works
    'NMF'
    >>> pretrained(path, kind=NMF).n_components_
    2
    >>> from decomp.transcription import PianoTranscriber
    >>> pretrained(path, kind=PianoTranscriber)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    decomp.exceptions.ModelFileError: ...nmf.decomp: holds an NMF, not a PianoTranscriber.
    >>> separator = pretrained("instruments")  # doctest: +SKIP
    >>> stems = separator.separate(mixture)  # doctest: +SKIP
    """
    from decomp.exceptions import ModelFileError
    from decomp.persistence import load

    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not kinds or not all(isinstance(item, type) for item in kinds):
            raise TypeError(f"kind must be a class or a tuple of classes; got {kind!r}.")
    path = pretrained_file(name_or_path)
    if (isinstance(name_or_path, str) and name_or_path in SHIPPED_MODELS
            and not path.exists()):
        raise FileNotFoundError(
            f"the shipped model {name_or_path!r} ({path.name}) is missing from this "
            f"installation; rebuild it with `{_REBUILD}`."
        )
    model = load(path)
    if kind is not None and not isinstance(model, kinds):
        expected = " or ".join(with_article(item.__name__) for item in kinds)
        raise ModelFileError(f"holds {with_article(type(model).__name__)}, not {expected}.",
                             str(path))
    return model
