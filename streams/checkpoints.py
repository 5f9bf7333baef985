"""Where model checkpoints live: a directory of files, written atomically, newest kept."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from online_models.checkpoint import Checkpoint, CheckpointError, load_checkpoint

__all__ = ["CheckpointStore"]

logger = logging.getLogger(__name__)

_PREFIX, _SUFFIX = "models-", ".ckpt"


class CheckpointStore:
    """Model checkpoints in ``directory``: ``models-<ms since epoch>.ckpt``, the ``keep`` newest.

    A checkpoint is written to a temporary file, flushed to disk and renamed into place, so a
    crash mid-write leaves the previous checkpoint as the newest, never a torn file.
    """

    def __init__(self, directory: Path, *, keep: int = 3, key: bytes | None = None) -> None:
        self.directory = directory
        self.keep = keep
        self._key = key

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(
            path
            for path in self.directory.iterdir()
            if path.name.startswith(_PREFIX) and path.name.endswith(_SUFFIX)
        )

    def save(self, raw: bytes, created_at: float) -> Path:
        """Write one checkpoint and drop the ones beyond ``keep``; returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_PREFIX}{int(created_at * 1000):015d}{_SUFFIX}"
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as file:
            file.write(raw)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
        _sync_directory(self.directory)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[Path, Checkpoint] | None:
        """The newest checkpoint, or None when there is none.

        Raises :class:`CheckpointError` naming the file when it cannot be restored: the
        worker then refuses to start rather than silently forget what its models learned.
        """
        paths = self.paths()
        if not paths:
            return None
        newest = paths[-1]
        try:
            return newest, load_checkpoint(newest.read_bytes(), key=self._key)
        except CheckpointError as exc:
            msg = (
                f"cannot restore the model checkpoint {newest}: {exc}. Move it out of "
                f"CRM_CHECKPOINT_DIR to start from the previous one (or, with none left, "
                f"from fresh models)"
            )
            raise CheckpointError(msg) from exc


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening directories)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
