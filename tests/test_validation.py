"""Parameter validation shared by every estimator: same bad value, same message, no compute."""

from __future__ import annotations

import re
from numbers import Integral, Real

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import validate_parameter_constraints

from decomp import DDS1, DDS2, DDS3, NMF
from decomp._validation import DEVICE, RANDOM_STATE, StrictInterval
from decomp.estimators import dds as dds_module
from decomp.estimators import nmf as nmf_module
from decomp.flows import ConditionalGlow, StackedRealNVP
from decomp.separation import NMFSeparator
from decomp.separation import baselines as baselines_module

DEVICES = ("'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index) or a torch.device of type 'cpu' "
           "or 'cuda'")
RANDOM_STATES = ("an int in the range [0, 4294967295], an instance of "
                 "'numpy.random.mtrand.RandomState' or None")
POSITIVE_INT = "an int in the range [1, inf)"

# (parameter, bad value, what the message says is allowed), for every estimator.
COMMON = [
    ("max_iter", True, POSITIVE_INT),
    ("max_iter", "100", POSITIVE_INT),
    ("max_iter", 0, POSITIVE_INT),
    ("tol", "1e-4", "a float in the range [0.0, inf)"),
    ("tol", float("nan"), "a float in the range [0.0, inf)"),
    ("random_state", True, RANDOM_STATES),
    ("device", "bogus", DEVICES),
    ("device", "meta", DEVICES),
    ("device", "cuda:x", DEVICES),
    ("device", 0, DEVICES),
    ("device", torch.device("meta"), DEVICES),
]
SPECIFIC = {
    NMF: [
        ("n_components", True, f"{POSITIVE_INT} or None"),
        ("n_components", "3", f"{POSITIVE_INT} or None"),
        ("n_components", 2.0, f"{POSITIVE_INT} or None"),
        ("n_components_per_source", False, f"{POSITIVE_INT} or None"),
        ("alpha", True, "a float in the range [0.0, inf)"),
        ("l1_ratio", 1.5, "a float in the range [0.0, 1.0]"),
        ("learning_rate", float("inf"), "a float in the range (0.0, inf)"),
    ],
    DDS1: [
        ("hidden_features", True, f"{POSITIVE_INT} or None"),
        ("n_flow_steps", "4", f"{POSITIVE_INT} or None"),
        ("batch_size", True, POSITIVE_INT),
        ("max_epochs", True, "an int in the range [0, inf)"),
        ("likelihood_weight", "1", "a float in the range [0.0, inf) or None"),
        ("validation_fraction", 1.0, "a float in the range [0.0, 1.0)"),
    ],
    NMFSeparator: [
        ("n_components_per_source", True, POSITIVE_INT),
        ("mask_power", "2", "a float in the range (0.0, inf)"),
    ],
}
SPECIFIC[DDS2] = SPECIFIC[DDS1] + [("n_components_per_source", True, POSITIVE_INT)]
SPECIFIC[DDS3] = SPECIFIC[DDS2]
ESTIMATORS = [NMF, DDS1, DDS2, DDS3, NMFSeparator]
CASES = [
    pytest.param(cls, name, value, allowed, id=f"{cls.__name__}-{name}={value!r}")
    for cls in ESTIMATORS
    for name, value, allowed in COMMON + SPECIFIC[cls]
]


def _message(cls: type, name: str, value: object, allowed: str) -> str:
    return re.escape(f"The {name!r} parameter of {cls.__name__} must be {allowed}. "
                     f"Got {value!r} instead.")


@pytest.fixture
def no_compute(monkeypatch):
    """Make every entry point into computation fail: validation must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("computation started before the parameters were validated")

    for module, name in [
        (nmf_module, "initialize_nmf"), (nmf_module, "initialize_activations"),
        (nmf_module, "minimize"), (dds_module, "initialize_activations"),
        (dds_module, "minimize"), (dds_module, "fit_flow"),
        (baselines_module, "_training_stems"),
    ]:
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr(dds_module._FlowDecomposer, "_make_flow", fail)
    monkeypatch.setattr(DDS3, "_make_flow", fail)


def _fit(estimator):
    rng = np.random.default_rng(0)
    if isinstance(estimator, NMFSeparator):
        return estimator.fit({"a": [rng.random(2000)], "b": [rng.random(2000)]})
    X = rng.random((20, 12)).astype(np.float32)
    if isinstance(estimator, NMF):
        return estimator.fit(X)
    return estimator.fit(X, np.repeat([0, 1], 10))


def _fitted(cls: type):
    """A fitted estimator, without running any engine (a fixed or untrained dictionary)."""
    if cls is NMF:
        rng = np.random.default_rng(0)
        return NMF(dictionary="frames").fit(rng.random((6, 12)), np.repeat([0, 1], 3))
    flow = (ConditionalGlow(2, 12, n_steps=1, hidden_features=4, random_state=0) if cls is DDS3
            else StackedRealNVP(2, 12, n_blocks=1, hidden_features=4, random_state=0))
    return cls.from_flow(flow, [0, 1])


@pytest.mark.parametrize(("cls", "name", "value", "allowed"), CASES)
def test_fit_refuses_bad_parameters_before_computing(no_compute, cls, name, value, allowed):
    with pytest.raises(ValueError, match=_message(cls, name, value, allowed)):
        _fit(cls(**{name: value}))


@pytest.mark.parametrize("cls", [NMF, DDS1, DDS2, DDS3])
@pytest.mark.parametrize(("name", "value", "allowed"), COMMON)
def test_transform_refuses_bad_parameters_before_computing(cls, name, value, allowed, request):
    estimator = _fitted(cls)
    request.getfixturevalue("no_compute")  # after fitting: from here nothing may compute
    estimator.set_params(**{name: value})
    with pytest.raises(ValueError, match=_message(cls, name, value, allowed)):
        estimator.transform(np.ones((5, 12), dtype=np.float32))


def test_separate_refuses_bad_parameters():
    separator = NMFSeparator()
    separator.model_ = _fitted(NMF)
    separator.classes_ = separator.model_.sources_
    separator.set_params(mask_power=True)
    with pytest.raises(ValueError, match=_message(NMFSeparator, "mask_power", True,
                                                  "a float in the range (0.0, inf)")):
        separator.separate(np.zeros(2000))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unavailable_cuda_is_refused_before_computing(no_compute, cls):
    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
        reason = f"but only {torch.cuda.device_count()} CUDA device(s) are visible"
    else:
        device, reason = "cuda", "but CUDA is not available"
    match = f"The 'device' parameter of {cls.__name__} is {device!r}, {reason}"
    with pytest.raises(ValueError, match=re.escape(match)):
        _fit(cls(device=device))


def test_strict_interval_refuses_booleans_only():
    integers = StrictInterval(Integral, 1, None, closed="left")
    assert integers.is_satisfied_by(3) and integers.is_satisfied_by(np.int64(3))
    assert not integers.is_satisfied_by(True) and not integers.is_satisfied_by(np.True_)
    reals = StrictInterval(Real, 0, None, closed="left")
    assert reals.is_satisfied_by(0.5) and reals.is_satisfied_by(2)
    assert not reals.is_satisfied_by(False) and not reals.is_satisfied_by(float("nan"))
    assert str(integers) == POSITIVE_INT


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", torch.device("cpu"),
                                    torch.device("cuda", 0)])
def test_device_constraint_accepts_the_documented_forms(device):
    assert DEVICE[0].is_satisfied_by(device)


@pytest.mark.parametrize("device", ["CPU", "gpu", "cuda:", "cuda:-1", "cpu:0", "mps", None, 1])
def test_device_constraint_refuses_other_values(device):
    assert not DEVICE[0].is_satisfied_by(device)
    assert str(DEVICE[0]) == DEVICES


@pytest.mark.parametrize("value", [0, 2**32 - 1, np.int64(7), np.random.RandomState(0), None])
def test_random_state_constraint_accepts_what_scikit_learn_accepts(value):
    validate_parameter_constraints({"random_state": RANDOM_STATE}, {"random_state": value},
                                   caller_name="f")


@pytest.mark.parametrize("value", [True, np.False_, -1, 2**32, "0", 1.0])
def test_random_state_constraint_refuses_booleans_and_the_rest(value):
    with pytest.raises(ValueError, match=_message(type("f", (), {}), "random_state", value,
                                                  RANDOM_STATES)):
        validate_parameter_constraints({"random_state": RANDOM_STATE}, {"random_state": value},
                                       caller_name="f")
