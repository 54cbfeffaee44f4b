"""One error family for everything a user can get wrong, said plainly in one sentence."""

from __future__ import annotations


class PursuhintError(Exception):
    """Something the user supplied is wrong; the message names the bad value and what is valid."""


class ConfigError(PursuhintError):
    """The configuration file or a key in it is invalid."""


class DataError(PursuhintError):
    """A data set is unknown, missing or malformed."""


class ModelError(PursuhintError):
    """An architecture is unknown or a model cannot be built."""


class CheckpointError(PursuhintError):
    """A checkpoint is missing, unreadable, or for another architecture."""


class HintSetError(PursuhintError):
    """A hint set is malformed, from a newer schema, impossible, or for another teacher."""


class DivergedError(PursuhintError):
    """Training produced a NaN or infinite loss."""


class DeviceError(PursuhintError):
    """A device was assigned that this torch build cannot use (e.g. a GPU from Ray, no CUDA in torch)."""


class StatsError(PursuhintError):
    """Scores cannot be summarised or compared (too few seeds in common, a non-finite score, a bad level)."""


class TrackingError(PursuhintError):
    """The tracking server or store cannot be used."""


class SweepInterrupted(PursuhintError):
    """The sweep was stopped (Ctrl-C / SIGINT) before every trial ended; ``--resume`` finishes it."""


class NoImportances(PursuhintError):
    """Why a sweep has no parameter importances to show; its message is the one-line caveat."""
