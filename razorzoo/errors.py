"""Exceptions raised by razorzoo.

Every error a user can cause derives from :class:`RazorzooError`, so the CLI prints its message without a traceback.
Messages say what was wrong, where, and what to do.
"""
from __future__ import annotations

__all__ = [
    "RazorzooError",
    "SubnetError",
    "UnknownModelError",
    "CardError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "PairMismatchError",
    "FetchError",
    "IntegrityError",
    "OfflineError",
    "HubError",
    "ImageError",
    "DatasetError",
    "OutputError",
]


class RazorzooError(Exception):
    """Base class of all user-facing razorzoo errors."""


class SubnetError(RazorzooError, ValueError):
    """A subnet YAML is malformed or chooses values outside its search space."""


class UnknownModelError(RazorzooError, KeyError):
    """A registry name (or alias) does not exist; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CardError(RazorzooError, ValueError):
    """A model card's front matter does not follow the card schema."""


class CheckpointError(RazorzooError, ValueError):
    """A checkpoint file cannot be read or does not have the expected layout."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle references a global outside the allow-list in a part razorzoo needs; nothing was executed."""


class PairMismatchError(RazorzooError, ValueError):
    """A subnet YAML and a checkpoint do not describe the same architecture."""


class FetchError(RazorzooError, OSError):
    """A download failed after retries."""


class IntegrityError(FetchError):
    """A downloaded file does not match its expected sha256; nothing was kept in the cache."""


class OfflineError(FetchError):
    """Offline mode is on and a needed file is not in the cache."""


class HubError(RazorzooError):
    """A Hugging Face Hub operation was refused (auth, name taken, invalid repo)."""


class ImageError(RazorzooError, ValueError):
    """An input image is missing, cannot be decoded, or has a type/shape/dtype razorzoo cannot interpret."""


class DatasetError(RazorzooError, ValueError):
    """An evaluation dataset or input source (annotation file, image folder, list file, video) cannot be used."""


class OutputError(RazorzooError, OSError):
    """A file razorzoo was asked to write cannot go there (a directory, the input itself, a full disk); nothing was
    left half-written."""
