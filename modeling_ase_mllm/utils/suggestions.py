"""Near-miss suggestions for a misspelt name, shared by the command line and the server's 400s."""

import difflib


def did_you_mean(value: str, known) -> str:
    """`" (did you mean 'composition'?)"` for a near miss, else ""."""
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
