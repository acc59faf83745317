"""Read published batch outputs as they were at any git revision, through DVC.

The outputs folder is a DVC out, so each commit's dvc.lock pins its content hash; DVC's
filesystem resolves a revision to those files in the local cache or a DVC remote. This is
the consumer side of versioning: a downstream job names a tag or commit and gets exactly
the latents that revision published, without checking it out.

    from seqmodels.versions import read_outputs, read_manifest
    table = read_outputs(rev="v1.2", columns=["window_id", "latent", "score"])
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from seqmodels.errors import SeqmodelsError
from seqmodels.publish import MANIFEST

DEFAULT_PATH = "outputs/latents"


@contextlib.contextmanager
def _revision(rev: str | None, repo: str | None, path: str) -> Iterator[Any]:
    """DVC's filesystem at `rev`, with its failures turned into one readable error.

    DVC resolves the revision lazily, so an unknown one surfaces on first access. The
    filesystem is closed on the way out: left to the interpreter's exit, its repository's
    threads aborted the process ("terminate called without an active exception") in about
    one run in three, after the data had been read."""
    from dvc.exceptions import DvcException
    from dvc.scm import SCMError

    fs = None
    try:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(repo or ".", rev=rev)
        yield fs
    except (SCMError, DvcException) as error:
        raise SeqmodelsError(f"cannot open revision {rev or 'workspace'} of {repo or 'this repository'}: "
                             f"{error}", where=f"--rev {rev}",
                             fix="use a commit, tag or branch of a git repository that uses DVC") from None
    except (FileNotFoundError, OSError) as error:
        raise SeqmodelsError(f"no published outputs at {path} in revision {rev or 'workspace'}: {error}",
                             where=f"{path}@{rev or 'workspace'}",
                             fix="check the path and revision (git log dvc.lock); if the revision has "
                             "them, fetch the data with `dvc pull` or `dvc fetch --rev REV`") from None
    finally:
        if fs is not None:
            fs.close()


def fetch_directory(path: str, target: Path, *, rev: str | None = None,
                    repo: str | None = None) -> str | None:
    """Copy the DVC-tracked folder `path` as it was at `rev` into `target` (e.g. the
    detector a past commit trained); returns the commit `rev` resolved to."""
    with _revision(rev, repo, path) as fs:
        if not fs.isdir(path):
            raise FileNotFoundError(f"{path} is not a folder at this revision")
        fs.get(path, str(target), recursive=True)
        return fs.repo.scm.resolve_rev(rev) if rev else None


def read_manifest(rev: str | None = None, *, path: str = DEFAULT_PATH,
                  repo: str | None = None) -> dict[str, Any]:
    """The `_manifest.json` of the outputs at `rev` (None: the workspace)."""
    with _revision(rev, repo, path) as fs, fs.open(f"{path}/{MANIFEST}", "r") as handle:
        return json.load(handle)


def read_outputs(rev: str | None = None, *, path: str = DEFAULT_PATH, repo: str | None = None,
                 columns: list[str] | None = None) -> pa.Table:
    """Every Parquet part of the outputs at `rev` as one Arrow table (`.to_pandas()` for pandas)."""
    with _revision(rev, repo, path) as fs:
        parts = sorted(name for name in fs.find(path) if name.endswith(".parquet"))
        if not parts:
            raise FileNotFoundError(f"{path} holds no Parquet files")
        tables = []
        for part in parts:
            with fs.open(part, "rb") as handle:
                try:
                    tables.append(pq.read_table(handle, columns=columns))
                except (KeyError, pa.ArrowInvalid) as error:  # a requested column is not there
                    raise SeqmodelsError(f"cannot read columns {columns} of {part} at {rev or 'workspace'}: "
                                         f"{str(error).splitlines()[0]}", where=part,
                                         fix="`seqmodels outputs show` prints the schema") from None
    return pa.concat_tables(tables)
