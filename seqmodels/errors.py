"""The project's own error types.

Every mistake a user can make (bad params, bad data, a broken checkpoint) becomes a
`SeqmodelsError` carrying what went wrong, where, and how to fix it. Stage entry points
print that message and exit non-zero instead of showing a stack trace from deep inside
Ray, pandas or torch.
"""

from __future__ import annotations


class SeqmodelsError(Exception):
    """A user-facing failure: `what` happened at `where`; `fix` says what to change."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  how to fix: {self.fix}")
        return "\n".join(lines)

    def __reduce__(self):
        # Ray pickles exceptions raised in workers; keep the keyword-only fields.
        return (_rebuild, (type(self), self.what, self.where, self.fix))


def _rebuild(cls, what, where, fix):
    return cls(what, where=where, fix=fix)


class ConfigError(SeqmodelsError):
    """params.yaml (or a --set override) is invalid."""


class DataError(SeqmodelsError):
    """Input data is missing, unreadable or does not fit what the stage needs."""


class DataValidationError(DataError):
    """A table failed its Pandera schema; the full report is on disk."""


class CheckpointError(SeqmodelsError):
    """A checkpoint or exported model is missing, corrupt or unsafe to load."""


class ClusterError(SeqmodelsError):
    """A Ray cluster cannot be reached or used, or a submitted job's results are unusable."""


class RemoteError(SeqmodelsError):
    """A DVC remote is not configured, cannot be reached, refuses the credentials, or lacks
    the data a revision needs."""


class OutputError(SeqmodelsError):
    """An output could not be written (disk full, permission denied, read-only filesystem);
    the previously published version is left in place."""


class TrainingDivergedError(SeqmodelsError):
    """The loss became NaN or infinite."""
