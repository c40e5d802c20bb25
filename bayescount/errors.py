"""Exceptions raised on bad input.

Every message names the problem and the fix in one line; the CLI turns
:class:`InputError` into exit code 2 without a traceback.
"""


class InputError(ValueError):
    """Bad user input (data, design, spec or options).

    Examples
    --------
    >>> raise InputError("counts contain NaN; replace missing values with 0 or drop the gene")
    Traceback (most recent call last):
    ...
    bayescount.errors.InputError: counts contain NaN; replace missing values with 0 or drop the gene
    """


class SpecError(InputError):
    """A template spec is invalid; the message lists every problem at once."""


class ResultIntegrityError(InputError):
    """A saved result does not match its recorded spec hash or is incomplete."""
