"""The trainer's exceptions.

    TrainerError
     +-- GenerateFailed   serving did not produce a message for an evaluation request
     +-- GateError        the eval gate could not judge a candidate (bad config, wrong version)
     +-- NotEnoughData    (also a ValueError) a window without the data a part needs
                          (no training steps, a PRM without both good and bad labels)
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error the trainer raises on purpose."""


class GenerateFailed(TrainerError):
    """A `Generate` call got no assistant message (HTTP error, refused version, wrong version).

    Implementations of `trainer.types.Generate` raise this, translated from their
    transport's errors, so that the gate counts a failed generation instead of crashing.
    """


class GateError(TrainerError):
    """The eval gate cannot judge this candidate (unknown version, it is already active, ...)."""


class NotEnoughData(TrainerError, ValueError):
    """The data at hand cannot train this part (yet)."""
