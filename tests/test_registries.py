"""The generic registry: duplicates, one-line did-you-mean errors, discovery by package scan."""

import sys

import pytest

from mismatch.config import LAYOUTS, METHODS, SpecError, load_trial_spec
from mismatch.registry import Registry, UnknownNameError, did_you_mean


def test_unknown_name_is_one_line_with_a_suggestion_and_the_known_names():
    reg = Registry("method")
    for name in ("mismatch", "sup1", "cct"):
        reg.register(name, object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("mismach")
    assert str(info.value) == "unknown method 'mismach' (did you mean 'mismatch'?); known: cct, mismatch, sup1"
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert reg.get("nope", None) is None
    assert did_you_mean("zzzz", ["a", "b"]) == ""


def test_duplicate_names_are_errors_and_the_decorator_returns_its_target():
    reg = Registry("thing")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg.names() == ["a"] and "a" in reg
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", 2)


def test_discovery_imports_every_module_of_a_package(tmp_path, monkeypatch):
    pkg = tmp_path / "plugpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from mismatch.registry import Registry\nREG = Registry('plugin', discover=['plugpkg'])\n")
    for name in ("alpha", "beta"):
        (pkg / f"{name}.py").write_text(f"from plugpkg import REG\nREG.register('{name}', '{name}!')\n")
    (pkg / "_private.py").write_text("raise RuntimeError('private modules are not scanned')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugpkg

    try:
        assert "plugpkg.alpha" not in sys.modules  # nothing imported before the first lookup
        assert plugpkg.REG.names() == ["alpha", "beta"] and plugpkg.REG.get("beta") == "beta!"
    finally:
        for mod in [m for m in sys.modules if m.startswith("plugpkg")]:
            del sys.modules[mod]


def test_registries_are_the_authority_for_spec_names():
    assert METHODS.names() == ["bcp", "cct", "cps", "fixmatch", "mean-teacher", "mismatch", "morph", "mta",
                               "sup-strong", "sup1", "sup2", "ua-mt", "unimatch"]
    assert LAYOUTS.names() == ["acdc-h5", "brats2018", "carve14", "la2018-h5", "msd"]
    with pytest.raises(SpecError, match=r"data.layout: .*unknown layout 'carve' \(did you mean 'carve14'\?\)"):
        load_trial_spec({"data": {"root": "/d", "layout": "carve"}, "method": "sup1"})
    with pytest.raises(SpecError, match=r"method: .*unknown method 'mismach' \(did you mean 'mismatch'\?\); known: bcp, cct"):
        load_trial_spec({"data": {"synthetic": {}}, "method": "mismach"})


@pytest.mark.parametrize(
    ("method", "model", "message"),
    [
        ("mismatch", "unet", r"network 'unet' lacks what this method requires \(decoders=2\); networks that have it: "
                             r"mm, mm-a, mm-b, mm-c"),
        ("sup2", "mm-z", r"unknown network 'mm-z' \(did you mean 'mm-c'\?\)"),
        # mm3d-a too while morph's requires does not name spatial_dims (issue 15: 2D-only methods).
        ("morph", "mm", r"networks that have it: mm-a(, mm3d-a)?$"),
    ],
)
def test_a_method_accepts_networks_by_capability(method, model, message):
    with pytest.raises(SpecError, match=message):
        load_trial_spec({"data": {"synthetic": {}}, "method": {"name": method, "model": model}})


def test_a_new_two_decoder_network_is_accepted_by_capability(monkeypatch):
    from mismatch.models.catalog import NETWORKS, NetworkCard

    monkeypatch.setattr(NETWORKS, "_entries", dict(NETWORKS._entries))
    NETWORKS.register("mm-z", NetworkCard("mm-z", "mismatch.models.networks:mm_a", decoders=2))
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": "sup2", "model": "mm-z"}})
    assert spec.method.model == "mm-z"


def test_fixmatch_config_lists_the_augment_operations():
    from mismatch.methods.augment import RANDAUGMENT_OPS
    from mismatch.methods.configs.fixmatch import RANDAUGMENT_NAMES

    assert RANDAUGMENT_NAMES == tuple(RANDAUGMENT_OPS)


def test_docs_tables_match_the_registries():
    from mismatch.docs_tables import stale_files

    assert stale_files() == [], "run `python -m mismatch.docs_tables --write`"
