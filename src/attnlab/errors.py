"""The one error type attnlab raises for bad input: a one-line message that says what to do."""


class AttnlabError(ValueError):
    """Bad input to attnlab. The message is a single line that tells the user what to do instead."""


class AttnlabWarning(UserWarning):
    """Something attnlab did differently from what was asked, said once (e.g. a steered span was evicted)."""
