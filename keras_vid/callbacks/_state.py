"""Reading and writing model variables from a callback on every backend."""


def sync_model_state(model):
    """Attach the trainer's current state to the model's variables.

    During `fit` on JAX the variables' values live in a separate state that
    is copied back only at certain points (the end of each epoch, for
    example). `jax_state_sync()` copies it now; it is a no-op when already
    synced and does not exist on the other backends.
    """
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()
