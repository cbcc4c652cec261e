"""Search spaces declared by the method configs: every dimension names a real field, the
method's own values lie in it, and each dimension becomes the matching Optuna distribution."""

import pytest

from mismatch.config import METHODS
from mismatch.search_space import SHARED_SPACE, Choice, IntRange, LogUniform, Uniform, check_space, method_space, overrides_of

PAPER_METHODS = ("sup1", "sup2", "mean-teacher", "fixmatch", "cct", "mta", "morph", "mismatch")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_declares_a_valid_space(name):
    config = METHODS.get(name)
    check_space(config)
    defaults = config(name=name)
    for param, dim in getattr(config, "search_space", {}).items():
        assert param in config.model_fields
        assert dim.source, f"{name}.{param}: the range names no source"
        assert dim.contains(getattr(defaults, param)), f"{name}.{param}: the default lies outside {dim.describe()}"
    assert method_space(config)["train.lr"] is SHARED_SPACE["train.lr"]


def test_paper_methods_tune_the_settings_of_their_papers():
    declared = {m: set(getattr(METHODS.get(m), "search_space", {})) for m in PAPER_METHODS}
    assert declared["mean-teacher"] == {"ema_decay", "alpha"}
    assert declared["fixmatch"] == {"threshold", "alpha"}
    assert declared["morph"] == {"alpha", "kernel_size"}
    assert declared["mismatch"] == {"alpha"} and declared["mta"] == {"alpha"} and "alpha" in declared["cct"]
    assert declared["sup1"] == declared["sup2"] == set()  # the learning rate only (shared)


def test_a_dimension_naming_no_field_is_an_error():
    class Fake:
        __name__ = "Fake"
        model_fields = {"alpha": None}
        search_space = {"alpah": LogUniform(1e-4, 1e-2)}

    with pytest.raises(ValueError, match="'alpah'"):
        check_space(Fake)


def test_ranges_and_overrides():
    assert Uniform(0.8, 0.98).contains(0.95) and not Uniform(0.8, 0.98).contains(0.99)
    assert IntRange(1, 7, step=2).contains(5) and not IntRange(1, 7, step=2).contains(4)
    assert Choice((3, 5, 7)).contains(5) and not Choice((3, 5, 7)).contains(4)
    with pytest.raises(ValueError):
        LogUniform(0, 1)
    assert overrides_of({"alpha": 0.3, "train.lr": 1e-3}) == {"method": {"alpha": 0.3}, "train": {"lr": 1e-3}}


def test_dimensions_become_optuna_distributions():
    import optuna

    from mismatch.study.search import distribution

    log = distribution(LogUniform(1e-4, 1e-2))
    assert isinstance(log, optuna.distributions.FloatDistribution) and log.log and log.low == 1e-4
    assert distribution(IntRange(1, 9, step=2)).step == 2
    assert distribution(Choice((3, 5, 7))).choices == (3, 5, 7)
