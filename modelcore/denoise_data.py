"""The denoising test set, fixed in code: seven real images, three noise levels, seeded noise.

Needs scikit-image (its bundled sample images); used by evaluation and the HTTP evaluation client,
never by the server.
"""

from __future__ import annotations

import numpy as np

from modelcore.denoise import add_noise

TEST_IMAGES = ("camera", "moon", "coins", "astronaut", "coffee", "chelsea", "rocket")
TEST_SIGMAS = (15.0, 25.0, 50.0)
# The quality bar: the blind model's mean PSNR minus non-local means', in dB, per test sigma.
TARGET_MARGINS = {"sigma_15": 0.0, "sigma_25": 0.5, "sigma_50": 0.5}
NOISE_SEED = 2026


def load_test_images() -> dict[str, np.ndarray]:
    """name -> greyscale float64 plane in [0, 1] (colour test photos are converted to grey)."""
    import skimage.data
    from skimage.color import rgb2gray

    images = {}
    for name in TEST_IMAGES:
        image = getattr(skimage.data, name)()
        images[name] = rgb2gray(image) if image.ndim == 3 else image / 255.0
    return images


def noisy_test_set(sigma: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (clean, noisy) at `sigma`, the noise seeded by image and level so every method sees the same pixels."""
    images = load_test_images()
    return {name: (clean, add_noise(clean, sigma, np.random.default_rng([NOISE_SEED, index, int(sigma)])))
            for index, (name, clean) in enumerate(images.items())}
