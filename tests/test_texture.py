"""Tests for medmae_nb.data.texture and the phantom's speckle contrast."""

from __future__ import annotations

import numpy as np
import pytest

from medmae_nb.data import DataError, make_phantom
from medmae_nb.data.texture import texture_stats


def test_texture_stats_of_known_images():
    flat = np.full((3, 1, 16, 16), 0.4)
    st = texture_stats(flat)
    assert st["pixel_noise_std"] == 0 and st["highpass_std"] == 0 and st["mean"] == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    white = rng.random((4, 1, 32, 32))
    st = texture_stats(white)
    assert abs(st["acf_lateral_1"]) < 0.35 and st["pixel_noise_std"] > 0.1  # uncorrelated noise
    stripes = np.tile(np.sin(np.arange(32) * 2.0), (2, 1, 32, 1))  # varies along x only
    st = texture_stats(stripes)
    assert st["acf_axial_1"] > 0.99 > st["acf_lateral_1"]


def test_speckle_contrast_orders_the_grain_and_keeps_the_scene():
    low, default, high = (make_phantom(60, 64, seed=3, speckle=s) for s in (0.0, 0.3, 1.0))
    noise = [texture_stats(d.images)["pixel_noise_std"] for d in (low, default, high)]
    assert noise[0] < noise[1] < noise[2]
    np.testing.assert_array_equal(low.labels, high.labels)  # same random stream: same scenes and lesions
    np.testing.assert_array_equal(low.masks, high.masks)
    assert make_phantom(60, 64, seed=3).images.tobytes() == default.images.tobytes()  # 0.3 is the default


@pytest.mark.parametrize("bad", [-0.1, 2.5, "high", True, float("nan")])
def test_bad_speckle_is_refused(bad):
    with pytest.raises(DataError, match="speckle must be a number in"):
        make_phantom(4, 32, speckle=bad)
