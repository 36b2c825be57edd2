"""The trainer's exceptions.

TrainerError
 └── NotEnoughData (also a ValueError): a window without the data a part needs
     (no training steps, a PRM without both good and bad labels)
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error the trainer raises on purpose."""


class NotEnoughData(TrainerError, ValueError):
    """The data at hand cannot train this part (yet)."""
