"""Each preparation step on small arrays whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.data import preprocess as pp


def test_clip_bounds():
    hu = np.array([-2000.0, -950.0, 0.0, 100.0, 3000.0])
    np.testing.assert_array_equal(pp.clip_intensity(hu, -950, 100), [-950, -950, 0, 100, 100])
    with pytest.raises(ValueError):
        pp.clip_intensity(hu, 1, 0)


def test_zscore_whole_case_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(5, 3, (4, 6, 6)), rng.normal(-100, 20, (4, 6, 6))]).astype(np.float32)
    out = pp.zscore(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-5)


def test_zscore_nonzero_uses_only_nonzero_voxels_and_keeps_background():
    channel = np.zeros((2, 4, 4), np.float32)
    channel[:, 1:3, 1:3] = [[1, 3], [5, 7]]  # mean 4, std sqrt(5)
    out = pp.zscore(channel[None], nonzero=True)[0]
    expected = (np.array([[1, 3], [5, 7]]) - 4) / np.sqrt(5)
    np.testing.assert_allclose(out[:, 1:3, 1:3], np.stack([expected, expected]), rtol=1e-6)
    assert np.all(out[channel == 0] == 0)


def test_zscore_of_a_constant_channel_is_centred():
    np.testing.assert_array_equal(pp.zscore(np.full((1, 2, 3, 3), 7.0)), 0)


def test_normalise_dispatch():
    image = np.array([[[[0.0, 2.0]]]])
    assert pp.normalise(image, "none").dtype == np.float32
    np.testing.assert_allclose(pp.normalise(image, "zscore"), [[[[-1, 1]]]])
    np.testing.assert_allclose(pp.normalise(image, "zscore-nonzero"), [[[[0, 0]]]])


def test_foreground_and_filter_counts():
    label = np.zeros((4, 5, 5), np.uint8)
    label[1, 0, :3] = 1  # 3 pixels of label 1
    label[2, :2, :] = 2  # 10 pixels of label 2
    label[3, 0, 0] = 4  # 1 pixel of label 4
    fg = pp.foreground(label, (1, 2, 4))
    assert fg.dtype == np.uint8 and fg.sum() == 14
    np.testing.assert_array_equal(pp.qualifying_slices(fg, 0), [1, 2, 3])
    np.testing.assert_array_equal(pp.qualifying_slices(fg, 3), [2])  # strictly more than 3
    np.testing.assert_array_equal(pp.qualifying_slices(pp.foreground(label, (1,)), 2), [1])
    assert pp.qualifying_slices(fg, 0).dtype == np.int64


def test_corner_and_centre_crops_exact_values():
    a = np.arange(6 * 7).reshape(6, 7)
    offsets = pp.corner_offsets(6, 7, 4)
    assert list(offsets) == list(pp.CORNERS)
    np.testing.assert_array_equal(pp.crop(a, *offsets["top-left"], 4), a[:4, :4])
    np.testing.assert_array_equal(pp.crop(a, *offsets["top-right"], 4), a[:4, 3:])
    np.testing.assert_array_equal(pp.crop(a, *offsets["bottom-left"], 4), a[2:, :4])
    np.testing.assert_array_equal(pp.crop(a, *offsets["bottom-right"], 4), a[2:, 3:])
    assert pp.centre_offset(6, 7, 4) == (1, 1)  # odd margin: the extra pixel goes after
    np.testing.assert_array_equal(pp.crop(a, *pp.centre_offset(6, 7, 4), 4), a[1:5, 1:5])
    stacked = np.stack([a, -a])  # leading axes are kept
    assert pp.crop(stacked, 0, 3, 4).shape == (2, 4, 4)


def test_crops_larger_than_the_slice_are_refused():
    with pytest.raises(ValueError, match="larger than the slice"):
        pp.corner_offsets(6, 7, 8)
    with pytest.raises(ValueError, match="does not fit"):
        pp.crop(np.zeros((6, 7)), 3, 0, 4)


def test_pad_to_multiple_of_8_at_bottom_right_with_channel_minimum():
    image = np.stack([np.arange(10 * 13).reshape(10, 13) - 5.0, np.full((10, 13), 2.0)])  # (C, H, W)
    out = pp.pad_to_multiple(image, 8, pp.channel_minimum(image))
    assert out.shape == (2, 16, 16)
    np.testing.assert_array_equal(out[:, :10, :13], image)
    assert np.all(out[0, 10:, :] == -5) and np.all(out[0, :, 13:] == -5)
    assert np.all(out[1, 10:, :] == 2)
    label = pp.pad_to_multiple(np.ones((3, 10, 13), np.uint8), 8, 0)
    assert label.shape == (3, 16, 16) and label.sum() == 3 * 130
    assert pp.pad_to_multiple(np.zeros((16, 8)), 8) .shape == (16, 8)  # already a multiple
    assert pp.pad_to_multiple(np.zeros((2, 9, 8)), 8, shape=(20, 8)).shape == (2, 24, 8)


def test_context_stack_modality_major_with_replicated_edges():
    c, s = 2, 4
    image = (10 * np.arange(c)[:, None] + np.arange(s)[None, :]).astype(np.float32)
    image = np.broadcast_to(image[:, :, None, None], (c, s, 2, 2))  # value = 10 * channel + slice
    out = pp.context_stack(image, np.array([0, 2, 3]), 3)
    assert out.shape == (3, 6, 2, 2)
    np.testing.assert_array_equal(out[:, :, 0, 0], [[0, 0, 1, 10, 10, 11], [1, 2, 3, 11, 12, 13], [2, 3, 3, 12, 13, 13]])
    single = pp.context_stack(image, np.array([1]), 1)
    np.testing.assert_array_equal(single[:, :, 0, 0], [[1, 11]])
