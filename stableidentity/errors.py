"""User-facing errors.

Every error a user can cause (a bad photo, a missing model, a wrong file) is a
`StableIdentityError`. The CLI prints its message on one line and exits 2; the
app shows it as a `gr.Error`. Anything else is a bug.
"""


class StableIdentityError(Exception):
    """An error whose message is meant for the user, not a traceback."""


class InvalidInputError(StableIdentityError, ValueError):
    """A parameter or file given by the user is not acceptable."""


class FaceNotFoundError(StableIdentityError):
    """The photo holds no usable face."""


class ModelLoadError(StableIdentityError):
    """A model could not be loaded; the message names it and says how to fix it."""


class IdentityFileError(StableIdentityError):
    """An identity file is missing, malformed or made for another base model."""


class CancelledError(StableIdentityError):
    """The user stopped a running job."""


class OutOfMemoryError(StableIdentityError):
    """The GPU (or the memory budget) ran out of memory; the message says what to try instead."""
