"""Every error a stage raises on purpose, in one place; each message names the key, file or fix.

Torch-free (the Snakefile imports the config errors). Stages catch these by class; the modules
that raise them import them from here.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or not allowed; the message names the key."""


class GridError(ConfigError):
    """A config value names something that does not exist (a method, dataset, protocol); the message names the key."""


class IntegrityError(RuntimeError):
    """A stage input differs from what its producer wrote (truncated, corrupted or swapped)."""


class NonFiniteLoss(RuntimeError):
    """The loss, a weight or a BatchNorm statistic became NaN or inf; the last good checkpoint is kept."""


class Diverged(RuntimeError):
    """Training diverged (non-finite weights or loss, or a chance-level classifier); nothing is written."""


class TooManyBadFiles(RuntimeError):
    """More than `max_bad_fraction` of the files could not be decoded."""


class ClaimsError(Exception):
    """An input that is missing or cannot be read as a claims table (exit status 2)."""
