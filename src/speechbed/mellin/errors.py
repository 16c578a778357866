"""The error raised for bad arguments to the Mellin ops (shapes, channels, devices, sizes).

Raised by speechbed.mellin.functional and the modules; it is both a UserInputError and a ValueError.
"""

from speechbed.errors import UserInputError


class MellinArgumentError(UserInputError, ValueError):
    """A Mellin op got an argument it cannot use; the message names the argument."""
