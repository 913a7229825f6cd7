"""Data sources and pipelines: what the loaders read, exact seeded subsampling."""

import numpy as np
import pytest

from keras_vid.experiments.data import (
    channel_stats,
    describe_source,
    load_image_folder,
    load_npz,
    load_split,
    load_tfds,
    make_dataset,
    subsample_per_class,
)


def _labels(per_class_counts):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class_counts)])
    return np.random.default_rng(0).permutation(labels)


def test_subsample_is_exact_per_class_and_deterministic():
    labels = _labels([30, 20, 25])
    first = subsample_per_class(labels, 7, seed=3)
    again = subsample_per_class(labels, 7, seed=3)
    np.testing.assert_array_equal(first, again)
    assert np.bincount(labels[first]).tolist() == [7, 7, 7]
    assert len(np.unique(first)) == 21
    other = subsample_per_class(labels, 7, seed=4)
    assert not np.array_equal(first, other)


def test_subsample_is_nested_across_sizes():
    labels = _labels([30, 20, 25])
    small = set(subsample_per_class(labels, 5, seed=1).tolist())
    large = set(subsample_per_class(labels, 15, seed=1).tolist())
    assert small <= large


def test_subsample_none_keeps_everything_and_too_many_fails():
    labels = _labels([3, 4])
    np.testing.assert_array_equal(subsample_per_class(labels, None), np.arange(7))
    with pytest.raises(ValueError, match="fewer than"):
        subsample_per_class(labels, 4)


def test_channel_stats_on_unit_scale():
    images = np.zeros((2, 2, 2, 3), "uint8")
    images[..., 1] = 255
    images[0, ..., 2] = 255
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, [0.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(std[2], 0.5, atol=1e-6)


def test_npz_loader_reads_x_y_and_split_keys(tmp_path):
    x = np.arange(4 * 3 * 3, dtype="uint8").reshape(4, 3, 3)
    y = np.array([0, 1, 2, 1])
    np.savez(tmp_path / "toy_train.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    split = load_split(str(tmp_path / "toy_{split}.npz"), "train")
    assert split.images.shape == (4, 3, 3, 1)
    np.testing.assert_array_equal(split.images[..., 0], x)
    assert split.labels.dtype == np.int64 and split.labels.tolist() == [0, 1, 2, 1]
    assert split.class_names == ["a", "b", "c"]

    np.savez(tmp_path / "both.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    test = load_npz(tmp_path / "both.npz", "test")
    assert test.images.shape == (2, 3, 3, 1) and test.num_classes == 2
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match="must hold"):
        load_npz(tmp_path / "bad.npz")


def test_image_folder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    expected = {}
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype="uint8")
            name = f"{cls}_{i}.png"
            Image.fromarray(pixels).save(tmp_path / "train" / cls / name)
            expected[(cls, i)] = pixels
    assert describe_source(str(tmp_path)) == "folder"
    split = load_image_folder(tmp_path, "train")
    assert split.class_names == ["cat", "dog"]
    assert split.images.shape == (6, 6, 5, 3) and split.images.dtype == np.uint8
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(split.images[4], expected[("dog", 1)])
    gray = load_image_folder(tmp_path, "train", color_mode="grayscale")
    assert gray.images.shape == (6, 6, 5, 1)
    with pytest.raises(ValueError, match="No split folder"):
        load_image_folder(tmp_path, "test")


def test_tfds_loader_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        split = load_tfds("mnist", "train")
    assert split.images.shape == (12, 28, 28, 1)
    assert split.labels.shape == (12,) and split.num_classes == 10
    assert describe_source("mnist") == "tfds"


def test_make_dataset_normalises_and_augments_deterministically():
    images = np.full((5, 8, 8, 1), 255, "uint8")
    labels = np.arange(5)
    plain = make_dataset(images, labels, batch_size=5, mean=[0.5], std=[0.25])
    x, y = next(iter(plain))
    np.testing.assert_allclose(np.asarray(x), 2.0)
    assert np.asarray(y).tolist() == [0, 1, 2, 3, 4]

    def batch(seed):
        ds = make_dataset(images, labels, batch_size=5, training=True, seed=seed, flip=False)
        return [np.asarray(t) for t in next(iter(ds))]

    (xa, ya), (xb, yb) = batch(1), batch(1)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert xa.shape == (5, 8, 8, 1)
    assert sorted(ya.tolist()) == [0, 1, 2, 3, 4]
    # Pad-and-crop shows zero padding on some image for this seed.
    assert xa.min() == 0.0 and xa.max() == 1.0
