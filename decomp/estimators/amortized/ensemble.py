"""An ensemble of fitted separators with unordered outputs: :class:`SeparatorEnsemble`."""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from decomp._backend import like_input
from decomp._validation import StrictInterval, check_params
from decomp.audio._segments import separate_file
from decomp.estimators.amortized.base import AmortizedSeparator, waveform_batch
from decomp.estimators.amortized.unordered import cosine_assignment, count_sounding_outputs
from decomp.persistence import Persistent

__all__ = ["SeparatorEnsemble"]

# How many ensembles are resolving their members right now: an ensemble loaded as a member
# does not resolve its own (``_member`` then refuses it, by name), so a file that names
# itself cannot recurse.
_resolving = [0]

#: The settings an ensemble gives only to the members that take them (at least one must),
#: and what is wrong when none does.
_NO_MEMBER_TAKES = {
    "refine_passes": "no member has refinement passes (AudioSlots has them)",
    "inference_overlap": "no member runs in inference windows (AudioSlots, BlockVAE, MHUNet "
                         "and SoundOfPixels do)",
}


class SeparatorEnsemble(Persistent, BaseEstimator):
    """Average the separated sources of several fitted separators.

    Every member separates the mixture; each member's outputs after the first are matched
    to the first member's, recording by recording (Hungarian, on the cosine similarity of
    the outputs' magnitude spectrograms, the rule that joins a separator's inference
    windows), and the matched sources are averaged with ``weights``. Members whose sources
    sum to the mixture give an ensemble whose sources sum to it too. The members must
    return unordered outputs (blind separators: AudioSlots, BlockVAE, MHUNet with
    ``heads="sources"``, :class:`~decomp.separation.NMFSeparator` with ``n_sources``,
    which chooses its instruments itself) at one sample rate; a member with fewer outputs
    is padded with silent ones.

    Parameters
    ----------
    separators : sequence of str, os.PathLike or fitted separators
        The members, at least two: shipped names or model files (loaded with
        :func:`decomp.pretrained` by :meth:`fit` and again whenever the ensemble is
        loaded, so a saved ensemble of names stays a few kB and follows the installed
        models) or fitted separators (saved inside the ensemble's file). The first sets
        the order of the outputs and the front end.
    weights : sequence of float, optional
        One positive weight per member, normalised to sum to one; None weighs the members
        equally.
    count_weights : mapping of int to sequence of float, optional
        Weights (as ``weights``) to use instead where a recording holds that many sources:
        ``n_sources`` when told, else the number of the first member's outputs that carry
        at least :data:`~decomp.estimators.amortized.unordered.SOUNDING_SHARE`
        (1 %) of its outputs' energy (in a stream, the
        energy summed over the segments so far). A count not in the mapping uses
        ``weights``. The shipped ``instruments`` gives its NMF member more weight on
        three instruments than on two this way.
    n_sources : int, optional
        How many sources every mixture holds, given to each member that takes a count
        (``n_sources``: AudioSlots, an MHUNet with ``count_sources=True``, a blind
        NMFSeparator) on a copy that shares its weights; every member must take it. None
        (default): each member's own setting.
    refine_passes : int, optional
        Given likewise to the members that take it (AudioSlots: without ``n_sources`` it
        refines the recordings where it counts three sources or more, see
        :class:`AudioSlots`); at least one must. None (default): each member's own.
    inference_overlap : float in [0, 1), optional
        Given likewise to the members that run in inference windows (AudioSlots, BlockVAE,
        MHUNet, SoundOfPixels; ``decomp separate --overlap``); at least one must. None
        (default): each member's own.

    Attributes
    ----------
    separators_ : list of separators
        The loaded members.
    weights_ : ndarray of shape (n_members,)
        The normalised weights.
    count_weights_ : dict of int to ndarray of shape (n_members,)
        The normalised ``count_weights`` (empty without them).
    front_end_ : Spectrogram
        The first member's front end (its ``sample_rate`` is the ensemble's).
    n_slots_ : int
        Outputs per recording: the most any member gives.

    Examples
    --------
    The shipped ``instruments-ensemble`` is ``SeparatorEnsemble(["instruments-slots",
    "instruments-count"], weights=[0.9, 0.1], count_weights={3: [0.65, 0.35]})``; the
    shipped ``instruments`` adds the blind NMF ``instruments-nmf`` and refines
    (docs/guide/model-card.md):

    >>> import numpy as np
    >>> from decomp import pretrained
    >>> ensemble = pretrained("instruments-ensemble")
    >>> ensemble.separate(np.zeros(16000, np.float32)).shape
    (3, 16000)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "separators": ["array-like"],
        "weights": ["array-like", None],
        "count_weights": [Mapping, None],
        "n_sources": [StrictInterval(Integral, 1, None, closed="left"), None],
        "refine_passes": [StrictInterval(Integral, 0, None, closed="left"), None],
        "inference_overlap": [StrictInterval(Real, 0, 1, closed="left"), None],
    }

    def __init__(self, separators: Sequence[Any] = (), weights: Sequence[float] | None = None,
                 count_weights: Mapping[int, Sequence[float]] | None = None,
                 n_sources: int | None = None, refine_passes: int | None = None,
                 inference_overlap: float | None = None) -> None:
        self.separators = separators
        self.weights = weights
        self.count_weights = count_weights
        self.n_sources = n_sources
        self.refine_passes = refine_passes
        self.inference_overlap = inference_overlap

    def fit(self, mixtures: Any = None, sources: Any = None) -> SeparatorEnsemble:
        """Load and check the members (they are fitted already; no data is used).

        Returns
        -------
        self : SeparatorEnsemble

        Raises
        ------
        ValueError
            If data is given, there are fewer than two members, a member is not a fitted
            separator with unordered outputs (or is an ensemble), the members' sample
            rates differ, or ``weights`` (or an entry of ``count_weights``) does not give
            one positive number per member, or a key of ``count_weights`` is not a
            positive count.
        """
        if mixtures is not None or sources is not None:
            raise ValueError("SeparatorEnsemble combines separators that are fitted "
                             "already: fit each member on data, then the ensemble with no "
                             "arguments.")
        self._validate_params()
        if isinstance(self.separators, (str, os.PathLike)) or len(self.separators) < 2:
            raise ValueError("SeparatorEnsemble needs at least two separators (names, model "
                             f"files or fitted separators); got {self.separators!r}.")
        self.weights_ = self._checked_weights(self.weights, len(self.separators), "weights")
        self.count_weights_ = self._checked_count_weights(len(self.separators))
        self.separators_ = [self._member(entry) for entry in self.separators]
        rates = {member.front_end_.sample_rate for member in self.separators_}
        if len(rates) > 1:
            raise ValueError("SeparatorEnsemble's members must share a sample rate; got "
                             f"{sorted(rates)} Hz.")
        self.front_end_ = self.separators_[0].front_end_
        self.n_slots_ = max(int(member.n_slots_) for member in self.separators_)
        return self

    @staticmethod
    def _checked_weights(given: Any, n_members: int, name: str) -> np.ndarray:
        if given is None:
            return np.full(n_members, 1.0 / n_members)
        try:
            weights = np.asarray(given, dtype=float)
        except (TypeError, ValueError):
            weights = np.full(0, np.nan)
        if (weights.shape != (n_members,) or not np.isfinite(weights).all()
                or (weights <= 0).any()):
            raise ValueError(f"SeparatorEnsemble's {name} must be {n_members} positive "
                             f"numbers, one per separator; got {given!r}.")
        return weights / weights.sum()

    def _checked_count_weights(self, n_members: int) -> dict[int, np.ndarray]:
        checked = {}
        for count, weights in (self.count_weights or {}).items():
            if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
                raise ValueError("SeparatorEnsemble's count_weights are keyed by a number of "
                                 f"sources (a positive integer); got the key {count!r}.")
            checked[int(count)] = self._checked_weights(weights, n_members,
                                                        f"count_weights[{count}]")
        return checked

    @staticmethod
    def _member(entry: Any) -> Any:
        """A member: ``entry`` loaded when it is a name or a path, checked."""
        from decomp.pretrained import pretrained, with_article

        named = isinstance(entry, (str, os.PathLike))
        if named:
            _resolving[0] += 1
            try:
                member = pretrained(entry)
            finally:
                _resolving[0] -= 1
        else:
            member = entry
        where = f"{str(entry)!r} holds" if named else "got"
        if isinstance(member, SeparatorEnsemble):
            by_name = all(isinstance(inner, (str, os.PathLike)) for inner in member.separators)
            hint = (f" (name its members instead: {', '.join(map(str, member.separators))})"
                    if named and by_name else "")
            raise ValueError(f"SeparatorEnsemble's members are separators, not ensembles; "
                             f"{where} a SeparatorEnsemble{hint}.")
        amortized = isinstance(member, AmortizedSeparator)
        if not amortized and not _separates_like_a_member(member):
            raise ValueError("SeparatorEnsemble's members are amortized separators (AudioSlots, "
                             f"BlockVAE, MHUNet) or an NMFSeparator; {where} "
                             f"{with_article(type(member).__name__)}.")
        if amortized:
            check_is_fitted(member, "network_state_")
        else:
            check_is_fitted(member)
        if not member._permutation_invariant:
            raise ValueError("SeparatorEnsemble's members give unordered outputs, matched to "
                             f"each other; {where} one with an output per class"
                             + ("." if amortized else " (an NMFSeparator is blind with "
                                                      "n_sources)."))
        return member

    def _told_members(self) -> list[Any]:
        """The members with the ensemble's ``n_sources``, ``refine_passes`` and
        ``inference_overlap`` where set: copies sharing each member's network, so a member
        given as an estimator is left as it was."""
        settings = {name: value for name, value in (
            ("n_sources", self.n_sources), ("refine_passes", self.refine_passes),
            ("inference_overlap", self.inference_overlap)) if value is not None}
        if not settings:
            return list(self.separators_)
        takes = {name: [name in member.get_params(deep=False) for member in self.separators_]
                 for name in settings}
        if "n_sources" in takes and not all(takes["n_sources"]):
            kinds = [type(member).__name__ for member, ok in
                     zip(self.separators_, takes["n_sources"], strict=True) if not ok]
            raise ValueError(f"SeparatorEnsemble(n_sources={self.n_sources}) tells every member "
                             f"the count, but {', '.join(kinds)} does not take one.")
        for name, missing in _NO_MEMBER_TAKES.items():
            if name in takes and not any(takes[name]):
                raise ValueError(f"SeparatorEnsemble({name}={settings[name]}): {missing}.")
        told = []
        for index, member in enumerate(self.separators_):
            own = {name: value for name, value in settings.items() if takes[name][index]}
            if own:
                # Set on a shallow copy, not through set_params, which would drop the
                # built network the copy shares (as AudioSlots' own rest passes do).
                member = copy.copy(member)
                for name, value in own.items():
                    setattr(member, name, value)
            told.append(member)
        return told

    def _check_n_sources(self) -> None:
        """Each member's own check of the count it is told (``decomp separate --sources``
        runs it before reading any file)."""
        check_is_fitted(self, "separators_")
        self._validate_params()
        if self.n_sources is None:
            return
        for member in self._told_members():
            member._check_n_sources()

    def _check_refine_passes(self) -> None:
        """Each member's own check of its refinement passes, where it has them."""
        check_is_fitted(self, "separators_")
        self._validate_params()
        if self.refine_passes is None:
            return
        for member in self._told_members():
            if hasattr(member, "_check_refine_passes"):
                member._check_refine_passes()

    def _get_state(self) -> dict[str, Any]:
        # The members are the parameters (names, paths or estimators): stored once, there.
        return {key: value for key, value in super()._get_state().items()
                if key != "separators_"}

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        if "count_weights_" not in state:  # a file saved before count_weights existed
            self.count_weights_ = self._checked_count_weights(len(self.separators))
        if _resolving[0]:
            return  # loaded as another ensemble's member, which _member refuses
        self.separators_ = [self._member(entry) for entry in self.separators]

    def separate(self, audio: Any, labels: Any = None) -> Any:
        """Separate waveforms with every member and average the matched sources.

        Parameters
        ----------
        audio : ndarray or Tensor of shape (n_samples,) or (n_items, n_samples)
            Mixture(s) at ``front_end_.sample_rate``.
        labels : None
            Not supported (the members' outputs are unordered).

        Returns
        -------
        sources : ndarray or Tensor of shape ([n_items,] n_slots_, n_samples)
            In the first member's order; they sum to the mixture when every member's do.
        """
        members = self._members_for(labels)
        waveforms, single = waveform_batch(audio)
        outputs = [torch.as_tensor(member.separate(waveforms)).float().cpu()
                   for member in members]
        combined = torch.stack([
            self._combine([member_outputs[item] for member_outputs in outputs],
                          _Evidence.none(len(members)))
            for item in range(len(waveforms))])
        return like_input(combined[0] if single else combined, audio)

    def separate_stream(self, blocks: Iterable[Any], labels: Any = None, *,
                        segment_frames: int | None = None) -> Iterator[np.ndarray]:
        """Separate a long mixture given block by block, in bounded memory.

        Every member separates the blocks with its own :meth:`separate_stream` (each
        keeps a source on one output from segment to segment), and their segments are
        combined as :meth:`separate` combines whole recordings, except that the members'
        outputs are matched on the evidence so far: the inner products and norms of the
        outputs' spectrograms, summed over the segments up to the current one. A
        recording of at most one segment is therefore separated exactly as by
        :meth:`separate` (up to float round-off); on a longer one, a segment's match is
        that of the recording up to its end (so a member's outputs may be matched anew
        where the evidence changes, e.g. when an instrument comes in).

        Parameters
        ----------
        blocks : iterable of array-like of shape (n_block_samples,)
            Consecutive samples at ``front_end_.sample_rate`` (e.g. a
            :class:`decomp.audio.AudioStream`).
        labels : None
            Not supported (the members' outputs are unordered).
        segment_frames : int, optional
            Hops of samples per output segment (default 2048), given to every member.

        Yields
        ------
        sources : ndarray of shape (n_slots_, n_segment_samples), float32
            Consecutive segments of the separated sources, in the first member's order.
        """
        members = self._members_for(labels)
        check_params({"segment_frames": [StrictInterval(Integral, 1, None, closed="left"), None]},
                     {"segment_frames": segment_frames}, "SeparatorEnsemble.separate_stream")
        copies = itertools.tee(blocks, len(members))
        streams = [member.separate_stream(copy_, segment_frames=segment_frames)
                   for member, copy_ in zip(members, copies, strict=True)]
        evidence = _Evidence.none(len(members))
        for segments in _joined(streams):
            combined = self._combine([torch.as_tensor(segment) for segment in segments],
                                     evidence)
            yield combined.numpy()

    def separate_file(self, path: str | os.PathLike,
                      out_paths: Sequence[str | os.PathLike] | Callable[[int], Sequence[Any]],
                      labels: Any = None, *, segment_frames: int | None = None,
                      block_frames: int = 65536) -> list[Path]:
        """Separate an audio file into one file per source, streaming (bounded memory).

        As :meth:`AmortizedSeparator.separate_file`, with :meth:`separate_stream`: the
        file is read block by block (resampled to ``front_end_.sample_rate``), and every
        stem is written atomically (an error leaves none of them).

        Returns
        -------
        paths : list of Path
            The written stems.
        """
        check_is_fitted(self, "separators_")
        return separate_file(
            lambda blocks: self.separate_stream(blocks, labels, segment_frames=segment_frames),
            path, out_paths, self.front_end_.sample_rate, block_frames=block_frames)

    def _members_for(self, labels: Any) -> list[Any]:
        """The members that separate (told the count where set), after the checks every
        separation starts with."""
        check_is_fitted(self, "separators_")
        if labels is not None:
            raise ValueError("SeparatorEnsemble's outputs are unordered, so labels do not "
                             "apply.")
        self._validate_params()
        return self._told_members()

    def _combine(self, outputs: list[torch.Tensor], evidence: _Evidence) -> torch.Tensor:
        """One recording's (or segment's) outputs, (S_k, n_samples) per member -> their
        weighted average (n_slots_, n_samples), each member after the first matched to
        the first on ``evidence`` plus these outputs, weighted for the count of sources
        (``evidence`` is updated)."""
        matched = self._matched(outputs, evidence)
        weights = self._weights_for(evidence.energies)
        combined = float(weights[0]) * matched[0]
        for values, weight in zip(matched[1:], weights[1:], strict=True):
            combined += float(weight) * values
        return combined

    def _matched(self, outputs: list[torch.Tensor], evidence: _Evidence) -> list[torch.Tensor]:
        """The members' outputs, (S_k, n_samples) each -> (n_slots_, n_samples) each,
        padded with silent slots, every member after the first in the first's order
        (matched on ``evidence`` plus these outputs; ``evidence`` is updated).
        benchmarks/ensemble_weights.py weighs them itself."""
        padded = [torch.nn.functional.pad(values.float(), (0, 0, 0, self.n_slots_ - len(values)))
                  for values in outputs]  # silent extra slots
        energies = padded[0].double().square().sum(1)
        evidence.energies = energies if evidence.energies is None else (
            evidence.energies + energies)
        reference = self._magnitudes(padded[0]).flatten(1)
        matched = [padded[0]]
        for values, sums in zip(padded[1:], evidence.matches, strict=True):
            magnitudes = self._magnitudes(values).flatten(1)
            heard = [reference @ magnitudes.T, reference.square().sum(1),
                     magnitudes.square().sum(1)]
            sums[:] = heard if not sums else [old + new for old, new in zip(sums, heard,
                                                                            strict=True)]
            matched.append(values[cosine_assignment(*sums)])
        return matched

    def _weights_for(self, energies: torch.Tensor) -> np.ndarray:
        """The weights for a recording whose first member's outputs carry ``energies``
        (S,) so far: ``count_weights_`` at its count of sources, else ``weights_``."""
        if not self.count_weights_:
            return self.weights_
        count = self.n_sources
        if count is None:
            count = int(count_sounding_outputs(energies.numpy()))
        return self.count_weights_.get(count, self.weights_)

    def _magnitudes(self, sources: torch.Tensor) -> torch.Tensor:
        """(S, n_samples) -> (S, n_frames, n_bins) front-end magnitudes."""
        return self.front_end_(sources)


@dataclass
class _Evidence:
    """What the ensemble has heard of one recording so far.

    Attributes
    ----------
    matches : list of list of Tensor
        For each member after the first: the inner products (S, S) of its outputs'
        spectrograms with the first member's and both sets of squared norms (S,), summed
        over the segments combined (empty before the first).
    energies : Tensor of shape (S,), optional
        The first member's outputs' energies, summed likewise (its count of sources).
    """

    matches: list[list[torch.Tensor]] = field(default_factory=list)
    energies: torch.Tensor | None = None

    @classmethod
    def none(cls, n_members: int) -> _Evidence:
        """The evidence before anything is heard."""
        return cls([[] for _ in range(n_members - 1)])


def _separates_like_a_member(member: Any) -> bool:
    """Whether a separator that is not amortized has what the ensemble uses of a member
    (:class:`decomp.separation.NMFSeparator`, from the layer above, recognised so rather
    than imported): ``separate``, ``separate_stream``, ``n_slots_`` and whether its
    outputs are unordered."""
    return isinstance(member, BaseEstimator) and all(
        hasattr(type(member), name) for name in ("separate", "separate_stream", "n_slots_",
                                                 "_permutation_invariant"))


def _joined(streams: list[Iterator[np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """The members' segment streams of one recording -> lists of segments, one per
    member, that cover the same samples (members whose hops differ cut different
    segments; all cover the recording)."""
    held: list[np.ndarray | None] = [None] * len(streams)
    while True:
        for index, stream in enumerate(streams):
            while held[index] is None or held[index].shape[1] == 0:
                segment = next(stream, None)
                if segment is None:
                    return  # every member has covered the recording
                held[index] = (segment if held[index] is None
                               else np.concatenate([held[index], segment], axis=1))
        length = min(segment.shape[1] for segment in held)
        yield [segment[:, :length] for segment in held]
        held = [segment[:, length:] for segment in held]
