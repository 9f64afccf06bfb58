"""The Fashion-MNIST converter on tiny IDX files written here (the real files are not needed by the tests)."""

import gzip

import datasets
import numpy as np
import pytest

from diffusers_simple_training.fashion_mnist import CLASS_NAMES, load_fashion_mnist, main, read_idx


def write_idx(path, array: np.ndarray, truncate: int = 0) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[: len(data) - truncate])


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_idx_files_become_an_image_dataset_with_labels(idx_dir, tmp_path):
    images = read_idx(str(idx_dir / "train-images-idx3-ubyte.gz"))
    main(["--source_dir", str(idx_dir), "--output_dir", str(tmp_path / "out")])
    dataset = datasets.load_from_disk(str(tmp_path / "out"))
    assert dataset.num_rows == {"train": 5, "test": 3}
    assert dataset["train"].features["label"].names == CLASS_NAMES
    first = dataset["train"][1]
    assert first["image"].mode == "L" and first["label"] == 1
    np.testing.assert_array_equal(np.asarray(first["image"]), images[1])


def test_truncated_or_foreign_files_are_refused(idx_dir):
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.arange(3), truncate=1)
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(str(idx_dir))
    with gzip.open(idx_dir / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x1f\x8b\x08\x00not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_fashion_mnist(str(idx_dir))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="dataset-fashion-mnist"):
        main(["--source_dir", str(tmp_path / "nowhere")])
