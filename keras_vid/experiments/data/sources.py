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
    """One split of a dataset held in memory.

    What every loader here returns, whatever the source, so the rest of the
    pipeline (`subsample_per_class`, `channel_stats`, `make_dataset`) sees
    one shape of data.

    Args:
        images: NumPy array `(n, height, width, channels)`, channels-last
            with a channel axis (the loaders add one to grayscale); uint8
            (0–255) or float (0–1).
        labels: NumPy int array `(n,)` of class indices (the loaders give
            int64).
        class_names: list of `num_classes` strings; index i names label i.

    The read-only property `num_classes` is `len(class_names)`.

    Example:

    ```python
    import numpy as np
    from keras_vid.experiments.data import Split

    split = Split(
        images=np.zeros((4, 8, 8, 1), "uint8"),
        labels=np.array([0, 1, 0, 1]),
        class_names=["cat", "dog"],
    )
    split.num_classes  # 2
    ```
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list

    @property
    def num_classes(self):
        """Number of classes, `len(class_names)`."""
        return len(self.class_names)


def _with_channels(images):
    images = np.asarray(images)
    return images[..., None] if images.ndim == 3 else images


def _labels(labels):
    return np.asarray(labels).reshape(-1).astype("int64")


def load_npz(path, split="train"):
    """Read `x`/`y` (or `x_<split>`/`y_<split>`) from an `.npz` file.

    `x_<split>`/`y_<split>` win over `x`/`y` when both are present. An
    optional `classes` array gives the class names; without it they are
    `"0"`, `"1"`, ... up to the largest label. Grayscale `(n, h, w)` images
    get a channel axis.

    Args:
        path: path (string or path-like) of the `.npz` file; a `{split}` in
            it is replaced by `split`, e.g. `"fashion_mnist_{split}.npz"`.
        split: split name, e.g. `"train"` or `"test"`; used to format `path`
            and to look up `x_<split>`/`y_<split>`. Defaults to `"train"`.

    Returns:
        A `Split`. Raises `ValueError` when the file holds neither pair of
        arrays or their lengths differ.

    Example:

    ```python
    import os
    import tempfile

    import numpy as np
    from keras_vid.experiments.data import load_npz

    path = os.path.join(tempfile.mkdtemp(), "toy_{split}.npz")
    np.savez(
        path.format(split="train"),
        x=np.zeros((6, 8, 8), "uint8"),
        y=np.array([0, 1, 2, 0, 1, 2]),
        classes=np.array(["a", "b", "c"]),
    )
    split = load_npz(path, "train")
    split.images.shape, split.class_names  # (6, 8, 8, 1), ['a', 'b', 'c']
    ```
    """
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

    Class names are the class sub-folder names in alphabetical order
    (label i is the i-th), and images come back as uint8 in file order.

    Args:
        root: path (string or path-like) of the folder holding one
            sub-folder per split.
        split: the split's sub-folder name. Defaults to `"train"`.
        image_size: `(height, width)` to resize to; `None` (the default)
            uses the size of the first image found (so a folder of same-size
            images is read unchanged; this needs Pillow).
        color_mode: `"rgb"` (the default), `"grayscale"` or `"rgba"`.

    Returns:
        A `Split` with uint8 images `(n, height, width, channels)`. Raises
        `ValueError` when `<root>/<split>` is not a folder.

    Example:

    ```python
    import os
    import tempfile

    import numpy as np
    import tensorflow as tf
    from keras_vid.experiments.data import load_image_folder

    root = tempfile.mkdtemp()
    for name in ("cat", "dog"):
        os.makedirs(os.path.join(root, "train", name))
        for i in range(2):
            png = tf.io.encode_png(np.full((8, 8, 3), 40 * i, "uint8"))
            tf.io.write_file(os.path.join(root, "train", name, f"{i}.png"), png)
    split = load_image_folder(root, "train", image_size=(8, 8))
    split.images.shape, split.labels  # (4, 8, 8, 3), [0, 0, 1, 1]
    ```
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
    """Read a tensorflow-datasets image classification split (`as_supervised`).

    Needs the `tensorflow-datasets` package. The whole split is read into
    memory; class names come from the `label` feature (or are `"0"`, `"1"`,
    ... when it has none).

    Args:
        name: tfds dataset name, e.g. `"cifar10"` or `"fashion_mnist"`.
        split: tfds split string, e.g. `"train"`, `"test"` or
            `"train[:10%]"`. Defaults to `"train"`.
        data_dir: folder where tfds stores (and looks for) prepared data;
            `None` (the default) uses tfds's default (`~/tensorflow_datasets`
            or `$TFDS_DATA_DIR`).

    Returns:
        A `Split`.

    Example:

    ```python
    # Offline: tfds's mock data generates random examples without download.
    import tensorflow_datasets as tfds
    from keras_vid.experiments.data import load_tfds

    with tfds.testing.mock_data(num_examples=12):
        split = load_tfds("mnist", "train")
    split.images.shape, split.num_classes  # (12, 28, 28, 1), 10

    # The real data needs internet access the first time (it is downloaded
    # and prepared under `data_dir`):
    # test = load_tfds("mnist", "test")
    ```
    """
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
    """`"npz"`, `"folder"` or `"tfds"`: how `load_split` will read `source`.

    A path ending in `.npz` is `"npz"` (whether or not it exists, since it
    may contain `{split}`), an existing folder is `"folder"`, and anything
    else is taken as a tensorflow-datasets name.

    Args:
        source: a string or path-like: an `.npz` path, a folder path or a
            tfds dataset name.

    Returns:
        One of the strings `"npz"`, `"folder"` or `"tfds"`.

    Example:

    ```python
    import tempfile

    from keras_vid.experiments.data import describe_source

    describe_source("fashion_mnist_{split}.npz")  # "npz"
    describe_source(tempfile.gettempdir())  # "folder"
    describe_source("cifar10")  # "tfds"
    ```
    """
    source = os.fspath(source)
    if source.endswith(".npz"):
        return "npz"
    if os.path.isdir(source):
        return "folder"
    return "tfds"


def load_split(source, split="train", data_dir=None, image_size=None, color_mode="rgb"):
    """Read one split from an `.npz` path, an image folder or a tfds name.

    Dispatches on `describe_source(source)` to `load_npz`,
    `load_image_folder` or `load_tfds`; arguments that the chosen loader
    does not take are ignored.

    Args:
        source: an `.npz` path (may contain `{split}`), a folder in the
            `<root>/<split>/<class>/*` layout, or a tfds dataset name.
        split: split name (or tfds split string). Defaults to `"train"`.
        data_dir: tfds data folder; tfds sources only. Defaults to `None`
            (tfds's default).
        image_size: `(height, width)` to resize to; folder sources only.
            `None` (the default) keeps the first image's size.
        color_mode: `"rgb"` (the default), `"grayscale"` or `"rgba"`;
            folder sources only.

    Returns:
        A `Split`.

    Example:

    ```python
    import os
    import tempfile

    import numpy as np
    from keras_vid.experiments.data import load_split

    path = os.path.join(tempfile.mkdtemp(), "toy_{split}.npz")
    for split, n in (("train", 6), ("test", 3)):
        np.savez(path.format(split=split), x=np.zeros((n, 8, 8, 3), "uint8"), y=np.arange(n) % 3)
    load_split(path, "test").images.shape  # (3, 8, 8, 3)
    ```
    """
    kind = describe_source(source)
    if kind == "npz":
        return load_npz(source, split)
    if kind == "folder":
        return load_image_folder(source, split, image_size=image_size, color_mode=color_mode)
    return load_tfds(source, split, data_dir=data_dir)
