"""Piano transcription: audio -> activations -> piano roll -> MIDI.

:mod:`~decomp.transcription.piano` holds the mechanism (:class:`PianoTranscriber` and its
post-processing); :mod:`~decomp.transcription.defaults` the policy (the default
transcribers' settings, training and cache, and the helpers that build their data).
"""

from decomp.transcription.defaults import (
    BAYESIAN_SETTINGS,
    DDS_FLOW_TRAINING,
    DDS_FRONT_ENDS,
    DDS_NORMALIZATION,
    DDS_SEARCH_SETTINGS,
    DDS_TIMBRE_AUGMENTATION,
    PRETRAINED_METHODS,
    bayesian_transcriber,
    default_dds_decomposer,
    default_dds_front_end,
    default_dds_settings,
    default_settings,
    default_transcriber,
    fit_transcriber,
    pretrained_path,
    protocol_features,
)
from decomp.transcription.evaluation import TranscriptionScores, evaluate_transcriber
from decomp.transcription.piano import (
    PianoTranscriber,
    Transcription,
    activity_to_roll,
    choose_threshold,
    default_decomposer,
    default_front_end,
    hysteresis_threshold,
)

__all__ = [
    "BAYESIAN_SETTINGS",
    "DDS_FLOW_TRAINING",
    "DDS_FRONT_ENDS",
    "DDS_NORMALIZATION",
    "DDS_SEARCH_SETTINGS",
    "DDS_TIMBRE_AUGMENTATION",
    "PRETRAINED_METHODS",
    "bayesian_transcriber",
    "PianoTranscriber",
    "Transcription",
    "TranscriptionScores",
    "activity_to_roll",
    "choose_threshold",
    "default_dds_decomposer",
    "default_dds_front_end",
    "default_dds_settings",
    "default_decomposer",
    "default_front_end",
    "default_settings",
    "default_transcriber",
    "evaluate_transcriber",
    "fit_transcriber",
    "hysteresis_threshold",
    "pretrained_path",
    "protocol_features",
]
