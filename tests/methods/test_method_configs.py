"""Every method's settings load strictly, and `mismatch methods` describes every method."""

import pytest

from mismatch.config import SpecError, load_trial_spec
from mismatch.methods import list_methods, method_config_class
from mismatch.methods.describe import describe_methods, format_methods


@pytest.mark.parametrize("name", list_methods())
def test_a_typo_in_a_method_setting_is_an_error_naming_it(name):
    with pytest.raises(SpecError, match="method.wdith"):
        load_trial_spec({"data": {"synthetic": {}}, "method": {"name": name, "wdith": 4}})


@pytest.mark.parametrize("name", list_methods())
def test_default_settings_round_trip(name):
    config = method_config_class(name)()
    assert config.name == name
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": config.model_dump(mode="json")})
    assert spec.method == config


#: Test-time parameters at width 24, one input channel (the per-trial rows' ``params``).
PARAMS_AT_24 = {
    "sup1": 1_879_777,
    "sup2": 2_681_132,
    "mean-teacher": 1_879_777,
    "fixmatch": 1_879_777,
    "cct": 1_879_777,
    "mta": 1_879_777,
    "morph": 2_440_442,
    "mismatch": 2_681_132,
}


def test_describe_methods_at_width_24():
    rows = {r["name"]: r for r in describe_methods(width=24, in_channels=1)}
    assert set(rows) == set(list_methods())
    for name, params in PARAMS_AT_24.items():
        assert rows[name]["params"] == params, name
    assert rows["cct"]["train_params"] == 1_879_777 + 3 * 560_665  # three auxiliary decoders
    assert rows["mean-teacher"]["train_params"] == 2 * 1_879_777
    assert not rows["sup1"]["uses_unlabelled"] and rows["fixmatch"]["uses_unlabelled"]
    assert rows["mismatch"]["dims"] == "2D/3D" and rows["unimatch"]["dims"] == "2D"
    text = format_methods(list(rows.values()))
    assert "mean-teacher" in text and "1,879,777" in text


def test_mismatch_methods_without_width_builds_each_at_its_default(capsys):
    from mismatch.cli import main

    assert main(["methods"]) == 0  # --width unset: each method's own default (it was a crash)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["method", "model", "dims"] and len(lines) == 1 + len(list_methods())
