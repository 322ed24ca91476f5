"""The one base class of the errors a user can act on.

Every stage raises a subclass of `TidemarkError` whose message names what was wrong and what to do.
The command line prints such an error as one short message (a traceback only with `--debug`);
anything else is a defect and keeps its traceback.
"""


class TidemarkError(Exception):
    """A problem with the user's input, configuration or data; the message says what and what to do."""


class NothingToDo(TidemarkError):
    """A scheduled step found nothing to do yet; the message says why. The DAGs skip the task with it."""
