"""The one exception type for bad input from a person (a file, a key, a value).

Raised anywhere in the library; command lines print its message without a traceback.
"""


class UserInputError(Exception):
    """Something a user gave us is wrong; the message says what, where and what to do."""
