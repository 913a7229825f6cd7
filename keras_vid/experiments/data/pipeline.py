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
    50-per-class one).

    Args:
        labels: array-like of class labels, any shape (flattened first).
        per_class: int ≥ 1, examples to keep of every class; a class with
            fewer raises `ValueError`. `None` keeps everything.
        seed: int seed of the per-class permutations. Defaults to `0`.

    Returns:
        A sorted int NumPy array of indices into `labels`
        (`np.arange(len(labels))` when `per_class` is `None`).

    Example:

    ```python
    from keras_vid.experiments.data import subsample_per_class

    labels = [0, 1, 0, 1, 0, 1, 2, 2]
    subsample_per_class(labels, per_class=2, seed=0)  # [0, 1, 4, 5, 6, 7]
    subsample_per_class(labels, per_class=None)  # [0, 1, ..., 7]
    ```
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
    """Per-channel mean and standard deviation of images on a 0–1 scale.

    The `mean` and `std` that `make_dataset` normalises with; compute them
    on the training split. uint8 images are divided by 255 first; the
    standard deviation is floored at 1e-6 so constant channels cannot cause
    a division by zero.

    Args:
        images: array-like `(..., channels)`, channels-last, uint8 (0–255)
            or float (taken as already on the 0–1 scale).

    Returns:
        A tuple `(mean, std)` of float32 NumPy arrays of shape `(channels,)`.

    Example:

    ```python
    import numpy as np
    from keras_vid.experiments.data import channel_stats

    images = np.array([[[[0, 255]], [[255, 255]]]], "uint8")  # (1, 2, 1, 2)
    mean, std = channel_stats(images)  # [0.5, 1.0], [0.5, 1e-6]
    ```
    """
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

    Stateless: `seed` fixes the crop and the flip, so the same seed always
    gives the same output (the CIFAR-style augmentation of the paper).

    Args:
        image: one image tensor `(height, width, channels)`.
        seed: shape-`(2,)` int32 or int64 tensor, the stateless random seed
            (the flip uses `seed + 1`).
        pad: int ≥ 0, pixels of zero padding on each side before cropping
            back to the input size; 0 skips the crop. Defaults to `4`.
        flip: bool, whether to flip left-right with probability 1/2.
            Defaults to `True`.

    Returns:
        A tensor of the same shape and dtype as `image`.

    Example:

    ```python
    import tensorflow as tf
    from keras_vid.experiments.data import augment

    image = tf.reshape(tf.range(16, dtype=tf.float32), (4, 4, 1))
    augment(image, seed=tf.constant([1, 2]), pad=1).shape  # (4, 4, 1)
    ```
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

    Images are scaled to 0–1 (uint8 divided by 255), augmented when
    training, then normalised as `(image - mean) / std`. The result feeds
    `model.fit` on every Keras backend.

    Args:
        images: array `(n, h, w, c)`, uint8 (0–255) or float (0–1).
        labels: int array `(n,)`.
        batch_size: int, batch size (the last batch may be smaller).
            Defaults to `128`.
        mean: per-channel mean `(c,)` on the 0–1 scale (from `channel_stats`
            of the training split); `None` (the default) skips
            normalisation.
        std: per-channel standard deviation `(c,)`, as for `mean`; pass it
            whenever `mean` is given. Defaults to `None`.
        training: bool; `True` shuffles every epoch and augments (when
            `augmentation`). Defaults to `False` (fixed order, no
            augmentation).
        augmentation: bool, whether to apply pad-and-crop (`pad`) and flip
            (`flip`) in training. Defaults to `True`.
        flip: bool, random horizontal flip in training augmentation.
            Defaults to `True`.
        pad: int ≥ 0, zero padding before the random crop in training
            augmentation (0: no crop). Defaults to `4`.
        seed: int seed of the shuffle and the augmentation. Defaults to `0`.

    Returns:
        A `tf.data.Dataset` of `(float32 images (b, h, w, c), labels (b,))`.

    Example:

    ```python
    import numpy as np
    from keras_vid.experiments.data import channel_stats, make_dataset

    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), "uint8")
    labels = np.arange(10) % 2
    mean, std = channel_stats(images)
    train = make_dataset(images, labels, batch_size=4, mean=mean, std=std, training=True)
    x, y = next(iter(train))
    x.shape, y.shape  # (4, 8, 8, 3), (4,)
    ```
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
