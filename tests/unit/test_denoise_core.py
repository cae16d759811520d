"""modelcore.denoise and the per-channel image planes, on real sample images."""

import numpy as np
import pytest
from PIL import Image

from modelcore.denoise import (
    ORIENTATIONS,
    Tiling,
    add_noise,
    estimate_sigma,
    from_tiles,
    oriented,
    self_ensemble,
    tiling_for,
    to_tiles,
)
from modelcore.images import merge_planes, split_planes


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return skimage.data.camera() / 255.0


@pytest.mark.parametrize("sigma", [5.0, 15.0, 25.0, 40.0])
def test_noise_level_estimate_is_close_on_a_real_photo(photo, sigma):
    noisy = add_noise(photo, sigma, np.random.default_rng(0))
    # Texture adds a little at low noise; the estimate must still be in the right range.
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.2, abs=2.0)


def test_added_noise_is_clipped_and_8_bit_like_a_saved_image(photo):
    noisy = add_noise(photo, 50.0, np.random.default_rng(1))
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert np.allclose(noisy * 255, np.round(noisy * 255))


@pytest.mark.parametrize("shape", [(5, 7), (28, 28), (100, 130), (303, 384), (700, 1100)])
def test_tiles_stitch_back_to_the_exact_plane(shape):
    plane = np.random.default_rng(2).random(shape).astype(np.float32)
    feeds, tiling, grid = to_tiles(plane, sigma=10.0)
    assert feeds["noisy"].shape[1:] == (1, tiling.size, tiling.size) and tiling.size % 8 == 0
    assert np.array_equal(from_tiles(feeds["noisy"], tiling, grid, shape), plane)
    assert (feeds["sigma"] == 10.0).all()


def test_large_planes_use_bounded_tiles_and_small_ones_a_single_tile():
    large = tiling_for((2000, 3000))
    assert large.size <= 512 and -(-2000 // large.step) * -(-3000 // large.step) == 5 * 7  # as few as 512-pixel tiles need
    small = tiling_for((100, 60))
    assert small.size == 152 and Tiling(small.size, small.overlap).step >= 100


@pytest.mark.parametrize("side", [464, 465, 512, 1024, 1500])
def test_tiles_are_just_big_enough_for_their_share_of_the_plane(side):
    tiling = tiling_for((side, side))
    per_side = -(-side // tiling.step)
    assert per_side == -(-side // 464)  # no more tiles than 512-pixel ones would take
    assert tiling.step - 8 < -(-side // per_side) <= tiling.step  # and each no bigger than its share needs


def test_stitching_ignores_padding_added_by_batching_with_larger_tiles():
    plane = np.random.default_rng(3).random((40, 50)).astype(np.float32)
    feeds, tiling, grid = to_tiles(plane, sigma=None)
    padded = np.zeros((len(feeds["noisy"]), 1, tiling.size + 32, tiling.size + 32), dtype=np.float32)
    padded[:, :, : tiling.size, : tiling.size] = feeds["noisy"]
    assert np.array_equal(from_tiles(padded, tiling, grid, plane.shape), plane)


@pytest.mark.parametrize(("mode", "planes", "back"), [("L", 1, "L"), ("RGB", 3, "RGB"), ("RGBA", 3, "RGBA"),
                                                       ("LA", 1, "LA"), ("P", 3, "RGB"), ("CMYK", 3, "RGB")])
def test_planes_round_trip_keeps_size_and_mode(mode, planes, back):
    import skimage.data

    image = Image.fromarray(skimage.data.astronaut()[:64, :80]).convert(mode)
    split = split_planes(image)
    assert len(split.planes) == planes
    rebuilt = merge_planes(split)
    assert rebuilt.mode == back and rebuilt.size == image.size
    if mode in ("L", "RGB", "RGBA", "LA"):
        assert np.array_equal(np.asarray(rebuilt), np.asarray(image))


def test_16_bit_images_stay_16_bit():
    image = Image.fromarray(np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64))
    rebuilt = merge_planes(split_planes(image))
    assert rebuilt.mode == "I;16" and np.array_equal(np.asarray(rebuilt), np.asarray(image))


def a_lopsided_network(batch: np.ndarray) -> np.ndarray:
    """Stands in for a network that is not symmetric: it smooths along rows only towards the right."""
    return 0.5 * (batch + np.roll(batch, 1, axis=-1))


@pytest.mark.parametrize("orientations", [("identity",), ("identity", "rot180"), tuple(ORIENTATIONS)])
def test_self_ensemble_turns_every_pass_back_before_averaging(photo, orientations):
    tiles = photo[None, None, :64, :64].astype(np.float32)
    outputs = oriented(tiles, orientations)  # a network that returns its input
    np.testing.assert_array_equal(self_ensemble(outputs, tiles, orientations), tiles)
    lopsided = self_ensemble(a_lopsided_network(oriented(tiles, orientations)), tiles, orientations)
    by_hand = np.mean([ORIENTATIONS[name](a_lopsided_network(ORIENTATIONS[name](tiles))) for name in orientations], axis=0)
    np.testing.assert_allclose(lopsided, by_hand, atol=1e-6)


def test_self_ensemble_ignores_the_padding_of_a_batch_with_larger_tiles(photo):
    tiles = photo[None, None, :64, :64].astype(np.float32)
    orientations = ("identity", "rot180")
    padded = np.full((2, 1, 96, 80), 9.0, dtype=np.float32)  # the batcher zero-pads; any value must be cut off
    padded[..., :64, :64] = oriented(tiles, orientations)
    np.testing.assert_array_equal(self_ensemble(padded, tiles, orientations), tiles)
