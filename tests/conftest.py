"""Shared pytest fixtures: seeding and resetting Keras' global state."""

import os

# Quieter TensorFlow start-up logs (also inherited by the subprocesses that
# the fresh-process reload tests start).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

SEED = 1234


@pytest.fixture(autouse=True)
def restore_keras_globals():
    """Restores the image data format and the dtype policy after each test.

    Tests may call `keras.config.set_image_data_format` or
    `keras.config.set_dtype_policy` (e.g. `"mixed_float16"`) freely; the
    global values are put back afterwards so no test leaks into another.
    """
    data_format = keras.config.image_data_format()
    policy = keras.config.dtype_policy()
    try:
        yield
    finally:
        keras.config.set_image_data_format(data_format)
        keras.config.set_dtype_policy(policy)


@pytest.fixture(autouse=True)
def seed():
    """Seeds Python, NumPy and the backend (`keras.utils.set_random_seed`).

    Autouse, so every test starts from the same random state; request it to
    get the seed value.
    """
    keras.utils.set_random_seed(SEED)
    return SEED


@pytest.fixture
def dtype_policy():
    """Returns a setter for the global dtype policy, restored after the test.

    Example: `dtype_policy("mixed_bfloat16")`.
    """

    def set_policy(name):
        keras.config.set_dtype_policy(name)
        return keras.config.dtype_policy()

    return set_policy
