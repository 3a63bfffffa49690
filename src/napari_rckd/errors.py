"""The one exception type a user should ever see from napari-rckd.

Every entry point (CLI, Python API, napari contributions) turns bad input into an
``RckdError`` whose message is one sentence: what was wrong, where, what to do.
The CLI prints it without a traceback; napari shows it as a notification.
"""


class RckdError(Exception):
    """Bad input or an unusable environment, explained in one sentence."""
