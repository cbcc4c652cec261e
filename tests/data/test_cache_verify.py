"""A prepared cache changed after prepare (same size, a NaN written in) is refused when a trial reads it."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import DataError, load_trial_data, open_prepared, prepare_dataset, write_synthetic_dataset
from mismatch.data import cache as cache_module
from mismatch.data.presets import data_spec_for
from mismatch.data.recipe import file_sha256 as real_sha256

PROTOCOL = ProtocolSpec(labelled_cases=1, unlabelled_cases=2, validation_cases=1, test_cases=1, labelled_slices=3)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):  # noqa: ANN001, ANN201
    return write_synthetic_dataset(tmp_path_factory.mktemp("raw") / "vessels", "vessels", 5, (32, 32), 8, seed=0)


@pytest.fixture
def prepared(raw, tmp_path):  # noqa: ANN001, ANN201
    prepare_dataset(data_spec_for("msd", raw, "msd", {"min_foreground": 5}), tmp_path / "p")
    return tmp_path / "p"


def _inject_nan(path) -> None:  # noqa: ANN001
    """Overwrite one float of a .npy file in place with NaN: same size, same header."""
    array = np.load(path, mmap_mode="r+")
    array.reshape(-1)[array.size // 2] = np.nan
    array.flush()
    del array


def _spec(prepared) -> DataSpec:  # noqa: ANN001
    return DataSpec(prepared=str(prepared), preset="msd", min_foreground=5)


def test_an_untouched_cache_loads_and_each_case_is_hashed_once(prepared, monkeypatch) -> None:  # noqa: ANN001
    data = load_trial_data(_spec(prepared), PROTOCOL)
    assert np.isfinite(data.test.images).all()
    hashed = []
    monkeypatch.setattr(cache_module, "file_sha256", lambda path: hashed.append(path) or real_sha256(path))
    cache = open_prepared(prepared)
    for _ in range(3):
        cache.arrays(cache.cases[0])
    info = cache.manifest["case_info"][cache.cases[0]]
    assert sorted(hashed) == sorted(prepared / info[k] for k in ("images", "labels"))  # once, both files


def test_a_nan_injected_at_the_same_size_is_an_error_naming_the_file(prepared) -> None:  # noqa: ANN001
    cache = open_prepared(prepared)
    victim = cache.cases[2]
    images = prepared / cache.manifest["case_info"][victim]["images"]
    size = images.stat().st_size
    _inject_nan(images)
    assert images.stat().st_size == size and np.isnan(np.load(images)).any()
    open_prepared(prepared)  # sizes still match: opening is cheap and passes
    with pytest.raises(DataError) as err:
        open_prepared(prepared).arrays(victim)
    message = str(err.value)
    assert str(images) in message and "prepare the cache again" in message and "\n" not in message
    other = next(c for c in cache.cases if c != victim)
    open_prepared(prepared).arrays(other)  # the other cases are fine
    assert open_prepared(prepared, verify=False).arrays(victim)[0].shape  # the check can be turned off
    assert cache.verify() == [cache.manifest["case_info"][victim]["images"]]


def test_a_trial_reading_a_tampered_cache_fails_before_training(prepared) -> None:  # noqa: ANN001
    cache = open_prepared(prepared)
    labels = prepared / cache.manifest["case_info"][cache.cases[0]]["labels"]
    array = np.load(labels, mmap_mode="r+")
    array.reshape(-1)[0] ^= 1  # one label flipped, same size
    array.flush()
    del array
    with pytest.raises(DataError, match=r"has changed since `mismatch data prepare` wrote it"):
        for fold in range(5):  # whichever fold reads the case
            load_trial_data(_spec(prepared), ProtocolSpec(**{**PROTOCOL.model_dump(), "fold": fold}))
