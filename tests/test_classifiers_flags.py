"""featx.classifiers.flags: every default a flag's help states is the estimator's own (the registry's defaults, else
the estimator class's), every flag's classifiers have its parameter, and the help names them first. The dense head's
and the tail's classes import Keras, so their flags are in the slow tier."""

from __future__ import annotations

import importlib
import inspect

import pytest

from featx.classifiers.flags import FLAGS, SWITCHES
from featx.classifiers.registry import CLASSIFIERS


def _defaults(name: str) -> dict:
    """The parameters classifier `name` is built with when the user sets none: its class's defaults, then the
    registry's own (e.g. rf's n_jobs=-1), without instantiating it."""
    cls, overrides = CLASSIFIERS[name]
    if isinstance(cls, str):
        module, attribute = cls.split(":")
        cls = getattr(importlib.import_module(module), attribute)
    signature = inspect.signature(cls.__init__)
    own = {p.name: p.default for p in signature.parameters.values() if p.default is not inspect.Parameter.empty}
    return {**own, **overrides}


KERAS = ("dense", "tail")  # their modules import Keras


@pytest.mark.parametrize(
    "flag",
    [
        pytest.param(flag, id=flag.name, marks=[pytest.mark.slow] if set(flag.classifiers) & set(KERAS) else [])
        for flag in FLAGS + SWITCHES
    ],
)
def test_each_flag_sets_a_parameter_its_classifiers_have_and_states_their_defaults(flag):
    for name in flag.classifiers:
        assert flag.parameter in _defaults(name), f"{flag.name}: {name} has no parameter {flag.parameter}"
    for name, stated in flag.defaults.items():
        actual = _defaults(name)[flag.parameter]
        assert actual == stated, f"{flag.name}: the help states {stated!r} for {name}, the estimator has {actual!r}"
    assert flag.help.startswith(", ".join(flag.classifiers) + ": ")


def test_a_stated_default_is_written_as_the_help_shows_it():
    shown = {flag.name: flag.help for flag in FLAGS}
    assert "(default 0.0001)" in shown["--alpha"] and "(default 1000)" in shown["--n-components"]
    assert "(default 256)" in shown["--hidden"] and "(default 1e-4)" in shown["--backbone-lr"]
