"""modelcore.digits.to_mnist_layout on real MNIST digits, redrawn the ways users photograph them."""

from http import HTTPStatus

import numpy as np
import pytest
from PIL import Image

from modelcore import digits
from modelcore.errors import InputError


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    return (rows * image).sum() / image.sum(), (cols * image).sum() / image.sum()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def best_shifted_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation allowing a one-pixel shift: centring by mass rounds to whole pixels."""
    return max(correlation(np.roll(a, (dy, dx), axis=(0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@pytest.fixture(scope="module")
def sample_digits(mnist_test):
    images, labels = mnist_test
    return images[:50].astype(np.float32), labels[:50]


def test_mnist_digits_pass_through_nearly_unchanged(sample_digits):
    images, _ = sample_digits
    laid_out = np.stack([digits.to_mnist_layout(image) for image in images])
    assert laid_out.shape == (50, 28, 28) and laid_out.dtype == np.float32
    assert np.abs(laid_out - images).mean() < 4.0
    assert min(best_shifted_correlation(a, b) for a, b in zip(laid_out, images)) > 0.9


def test_dark_ink_on_light_paper_is_inverted_to_mnist_polarity(sample_digits):
    images, _ = sample_digits
    for image in images[:10]:
        assert np.allclose(digits.to_mnist_layout(255.0 - image), digits.to_mnist_layout(image), atol=1.0)


def test_large_off_centre_photo_is_cropped_scaled_and_centred(sample_digits):
    image = sample_digits[0][3]
    # Paper-grey page, 400x300, with the digit drawn 8x larger in the top-left corner, dark on light.
    page = np.full((300, 400), 210.0, dtype=np.float32)
    big = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)
    page[10:234, 20:244] = 210.0 - big * (170.0 / 255.0)
    laid_out = digits.to_mnist_layout(page)
    assert best_shifted_correlation(laid_out, digits.to_mnist_layout(image)) > 0.9
    row, col = centre_of_mass(laid_out)
    assert abs(row - 14) < 1 and abs(col - 14) < 1


def test_digit_fits_a_20_pixel_box_keeping_aspect_ratio():
    bar = np.zeros((200, 60), dtype=np.float32)
    bar[:, 20:40] = 255.0  # a tall "1": 200 px high, 20 px wide
    laid_out = digits.to_mnist_layout(np.pad(bar, 50))
    ink_rows = np.flatnonzero(laid_out.max(axis=1) > 25)
    ink_cols = np.flatnonzero(laid_out.max(axis=0) > 25)
    assert 19 <= len(ink_rows) <= 21
    assert len(ink_cols) <= 4


@pytest.mark.parametrize("value", [0.0, 128.0, 255.0])
def test_blank_image_is_rejected_with_422(value):
    with pytest.raises(InputError) as caught:
        digits.to_mnist_layout(np.full((64, 64), value, dtype=np.float32))
    assert caught.value.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "No digit found" in caught.value.message
