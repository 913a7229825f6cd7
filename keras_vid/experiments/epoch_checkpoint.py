"""A training run's checkpoint as one folder per completed epoch.

The folder holds the model's weights with the optimizer's state (Keras's
sharded weights), the Lookahead average and the run's JSON record, in files
no larger than `SHARD_GB`, so a run that outlasts its machine can commit its
progress and the same command resumes elsewhere. Each epoch's folder is
written beside the last one and swapped in, so a crash leaves one complete
checkpoint.
"""

import glob
import json
import os
import shutil

import numpy as np

SHARD_GB = 0.04
"""Largest file of a checkpoint, in GB: under the 50 MB a repository host
accepts without warning, so a run that spans machines can commit it."""


def checkpoint_dir(output):
    """The folder of `output`'s last completed epoch: the model's weights with
    the optimizer's state (Keras's sharded weights), the Lookahead average
    (`lookahead_*.npz`) and the JSON record (`progress.json`)."""
    return output + ".ckpt"


def shards(arrays, max_bytes):
    """Consecutive groups of `arrays` of at most `max_bytes` each (an array
    larger than that gets a group of its own)."""
    groups, size = [[]], 0
    for array in arrays:
        if groups[-1] and size + array.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(array)
        size += array.nbytes
    return groups


def save_checkpoint(output, model, progress, lookahead=None):
    """Write the epoch's folder beside the last one, then swap them, so a
    crash at any point leaves one complete checkpoint."""
    final = checkpoint_dir(output)
    temporary, old = final + ".tmp", final + ".old"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    model.save_weights(os.path.join(temporary, "model.weights.json"), max_shard_size=SHARD_GB)
    if lookahead is not None:
        state = [lookahead.state()[f"v{i}"] for i in range(len(lookahead.average))]
        for k, group in enumerate(shards(state, SHARD_GB * 1e9)):
            np.savez(os.path.join(temporary, f"lookahead_{k:05d}.npz"), *group)
    with open(os.path.join(temporary, "progress.json"), "w") as file:
        json.dump(progress, file, indent=1)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(temporary, final)
    shutil.rmtree(old, ignore_errors=True)


def load_progress(output):
    """The JSON record of `output`'s last checkpoint, or `None` when there is
    none (a swap cut short by a crash is completed first)."""
    final = checkpoint_dir(output)
    if not os.path.exists(final) and os.path.exists(final + ".old"):
        os.replace(final + ".old", final)
    path = os.path.join(final, "progress.json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def restore_model(output, model):
    """Load the last checkpoint's weights and optimizer state into `model`,
    compiled and with its optimizer built as when it was saved."""
    model.load_weights(os.path.join(checkpoint_dir(output), "model.weights.json"))
    return model


def load_lookahead_state(output):
    """The Lookahead average saved with `output`'s last checkpoint."""
    files = sorted(glob.glob(os.path.join(checkpoint_dir(output), "lookahead_*.npz")))
    arrays = []
    for path in files:
        with np.load(path) as shard:
            arrays += [shard[f"arr_{i}"] for i in range(len(shard.files))]
    return {f"v{i}": array for i, array in enumerate(arrays)}
