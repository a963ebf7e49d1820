"""The base of the errors whose messages are written for the user.

An error of `sedlib` that a user can meet in a run (a bad params file, a damaged artefact, a run
directory held by another run, a diverged training run) derives from `SedlibError` and says, in
plain words, what went wrong and what to do. The runner (`sedlib.pipeline.runner`) shows such a message as it
is, and the class name of any other error beside its message, since that one is likely a bug.
"""


class SedlibError(Exception):
    """An error whose message names what failed (file, params key) and what to do about it."""


def user_error_names() -> set[str]:
    """The class names of every `SedlibError` defined in the modules imported so far."""
    names, pending = set(), [SedlibError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names
