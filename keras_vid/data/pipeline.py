"""tf.data input pipelines that feed any Keras backend.

`fit(dataset)` converts a `tf.data.Dataset` for JAX and PyTorch too, so one
pipeline serves all three backends. Everything random is seeded:
subsampling, shuffling and augmentation, so a run is repeatable.
"""

import numpy as np
import tensorflow as tf


def subsample_per_class(labels, per_class, seed=0):
    """Indices of exactly `per_class` examples of every class, chosen at random.

    Each class's examples are permuted with a generator seeded by `seed`
    and the first `per_class` kept, so the choice is deterministic and the
    subsets for one seed are nested (the 10-per-class subset is inside the
    50-per-class one). Returns sorted indices; `None` keeps everything.
    """
    labels = np.asarray(labels).reshape(-1)
    if per_class is None:
        return np.arange(len(labels))
    if per_class < 1:
        raise ValueError(f"`per_class` must be ≥ 1 or None. Received: {per_class!r}")
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(
                f"Class {cls} has {len(members)} examples, fewer than per_class={per_class}."
            )
        rng = np.random.default_rng([seed, int(cls)])
        chosen.append(members[rng.permutation(len(members))[:per_class]])
    return np.sort(np.concatenate(chosen))


def channel_stats(images):
    """Per-channel mean and standard deviation of images on a 0–1 scale."""
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    axes = tuple(range(images.ndim - 1))
    flat = images.astype("float64") / scale
    mean = flat.mean(axis=axes)
    std = flat.std(axis=axes)
    return mean.astype("float32"), np.maximum(std, 1e-6).astype("float32")


def _to_unit(images):
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def augment(image, seed, pad=4, flip=True):
    """Zero-pad by `pad`, random-crop back to size, random horizontal flip.

    Stateless: `seed` (a shape-(2,) int tensor) fixes the crop and the flip.
    """
    shape = tf.shape(image)
    if pad:
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, shape, seed=seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image


def make_dataset(
    images,
    labels,
    batch_size=128,
    mean=None,
    std=None,
    training=False,
    augmentation=True,
    flip=True,
    pad=4,
    seed=0,
):
    """A batched, prefetched `tf.data.Dataset` of normalised `(image, label)`.

    Args:
        images: array `(n, h, w, c)`, uint8 (0–255) or float (0–1).
        labels: int array `(n,)`.
        batch_size: batch size.
        mean, std: per-channel statistics on the 0–1 scale (from
            `channel_stats` of the training split); `None` skips
            normalisation.
        training: shuffle every epoch and augment (when `augmentation`).
        augmentation: pad-and-crop (`pad`) and flip (`flip`) in training.
        seed: seed of the shuffle and the augmentation.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    mean = None if mean is None else tf.constant(mean, tf.float32)
    std = None if std is None else tf.constant(std, tf.float32)

    def normalise(image):
        image = _to_unit(image)
        if mean is not None:
            image = (image - mean) / std
        return image

    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        if augmentation and (pad or flip):
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            dataset = tf.data.Dataset.zip((dataset, seeds)).map(
                lambda pair, s: (normalise(augment(_to_unit(pair[0]), s, pad, flip)), pair[1]),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        else:
            dataset = dataset.map(lambda x, y: (normalise(x), y))
    else:
        dataset = dataset.map(lambda x, y: (normalise(x), y))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
