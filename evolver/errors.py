"""Errors of the evolver.

EvolverError
├── ModelCallFailed    the judge or evolver model could not be reached or answered badly
├── ProposalRejected   an edit proposal failed the schema or the safety checks
└── ReplayFailed       serving could not replay a turn for the gate
"""

from __future__ import annotations


class EvolverError(Exception):
    pass


class ModelCallFailed(EvolverError):
    pass


class ProposalRejected(EvolverError):
    pass


class ReplayFailed(EvolverError):
    pass
