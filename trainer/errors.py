"""The trainer's exceptions.

    TrainerError
     +-- GenerateFailed   serving did not produce a message for an evaluation request
     +-- GateError        the eval gate could not judge a candidate (bad config, wrong version)
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error the trainer raises."""


class GenerateFailed(TrainerError):
    """A `Generate` call got no assistant message (HTTP error, refused version, wrong version).

    Implementations of `trainer.types.Generate` raise this, translated from their
    transport's errors, so that the gate counts a failed generation instead of crashing.
    """


class GateError(TrainerError):
    """The eval gate cannot judge this candidate (unknown version, it is already active, ...)."""
