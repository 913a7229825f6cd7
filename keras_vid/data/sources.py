"""Reading a dataset split into NumPy arrays, whatever it is stored as.

Three sources, one result (`images`, `labels`, `class_names`):

- a tensorflow-datasets name (`"cifar10"`, `"fashion_mnist"`, ...);
- a folder in the `keras.utils.image_dataset_from_directory` layout,
  `<root>/<split>/<class>/*.png|jpg`;
- an `.npz` file with `x` and `y` arrays; a path containing `{split}` is
  formatted with the split name (`fashion_mnist_{split}.npz`), and a single
  file may also hold `x_<split>` / `y_<split>` pairs.

Images come back channels-last with a channel axis (grayscale gets one),
labels as int64. The small datasets of these experiments fit in memory,
which keeps per-class subsampling exact and cheap.
"""

import dataclasses
import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclasses.dataclass
class Split:
    """One split of a dataset held in memory."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list

    @property
    def num_classes(self):
        return len(self.class_names)


def _with_channels(images):
    images = np.asarray(images)
    return images[..., None] if images.ndim == 3 else images


def _labels(labels):
    return np.asarray(labels).reshape(-1).astype("int64")


def load_npz(path, split="train"):
    """Read `x`/`y` (or `x_<split>`/`y_<split>`) from an `.npz` file."""
    path = os.fspath(path).format(split=split)
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if f"x_{split}" in keys and f"y_{split}" in keys:
            x, y = data[f"x_{split}"], data[f"y_{split}"]
        elif "x" in keys and "y" in keys:
            x, y = data["x"], data["y"]
        else:
            raise ValueError(
                f"{path} must hold arrays `x` and `y` (or `x_{split}` and `y_{split}`); "
                f"it holds {sorted(keys)}."
            )
        names = [str(c) for c in data["classes"]] if "classes" in keys else None
    labels = _labels(y)
    if len(x) != len(labels):
        raise ValueError(f"{path}: {len(x)} images but {len(labels)} labels.")
    if names is None:
        names = [str(c) for c in range(int(labels.max()) + 1)]
    return Split(_with_channels(x), labels, names)


def _first_image_size(directory):
    from PIL import Image

    for root, _, files in sorted(os.walk(directory)):
        for file in sorted(files):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                with Image.open(os.path.join(root, file)) as image:
                    return image.size[1], image.size[0]
    raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {directory}.")


def load_image_folder(root, split="train", image_size=None, color_mode="rgb"):
    """Read `<root>/<split>/<class>/*` with `keras.utils.image_dataset_from_directory`.

    Args:
        root: the folder holding one sub-folder per split.
        split: the split's sub-folder name.
        image_size: `(height, width)` to resize to; `None` uses the size of
            the first image found (so a folder of same-size images is read
            unchanged).
        color_mode: `"rgb"`, `"grayscale"` or `"rgba"`.
    """
    import keras

    directory = os.path.join(os.fspath(root), split)
    if not os.path.isdir(directory):
        raise ValueError(f"No split folder {directory} (expected <root>/<split>/<class>/...).")
    image_size = tuple(image_size) if image_size else _first_image_size(directory)
    dataset = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        image_size=image_size,
        batch_size=None,
        shuffle=False,
        verbose=False,
    )
    class_names = list(dataset.class_names)
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    images = np.stack(images).round().clip(0, 255).astype("uint8")
    return Split(images, _labels(labels), class_names)


def load_tfds(name, split="train", data_dir=None):
    """Read a tensorflow-datasets image classification split (`as_supervised`)."""
    import tensorflow_datasets as tfds

    dataset, info = tfds.load(
        name, split=split, as_supervised=True, data_dir=data_dir, with_info=True
    )
    images, labels = [], []
    for image_batch, label_batch in tfds.as_numpy(dataset.batch(4096)):
        images.append(image_batch)
        labels.append(label_batch)
    images, labels = np.concatenate(images), np.concatenate(labels)
    label_feature = info.features["label"]
    class_names = list(getattr(label_feature, "names", None) or [])
    labels = _labels(labels)
    if not class_names:
        class_names = [str(c) for c in range(int(labels.max()) + 1)]
    return Split(_with_channels(images), labels, class_names)


def describe_source(source):
    """`"npz"`, `"folder"` or `"tfds"`: how `load_split` will read `source`."""
    source = os.fspath(source)
    if source.endswith(".npz"):
        return "npz"
    if os.path.isdir(source):
        return "folder"
    return "tfds"


def load_split(source, split="train", data_dir=None, image_size=None, color_mode="rgb"):
    """Read one split from an `.npz` path, an image folder or a tfds name."""
    kind = describe_source(source)
    if kind == "npz":
        return load_npz(source, split)
    if kind == "folder":
        return load_image_folder(source, split, image_size=image_size, color_mode=color_mode)
    return load_tfds(source, split, data_dir=data_dir)
