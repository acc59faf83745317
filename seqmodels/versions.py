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
def _revision(rev: str | None, repo: str | None, path: str, remote: str | None = None) -> Iterator[Any]:
    """DVC's filesystem at `rev`, checked to track `path`, with every failure turned into
    one readable error.

    Files missing from the local cache are streamed from the DVC remote the revision's
    .dvc/config names (or `remote`), one at a time, without filling a cache: a consumer in a
    fresh clone reads only what it asks for. DVC resolves the revision lazily, so an unknown
    one surfaces on first access. The filesystem is closed on the way out: left to the
    interpreter's exit, its repository's threads aborted the process ("terminate called
    without an active exception") in about one run in three, after the data had been read."""
    from dvc.exceptions import DvcException
    from dvc.scm import RevError, SCMError

    from seqmodels import remote as remotes

    label = rev or "workspace"
    source = repo or "this repository"
    fs = None
    try:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(repo or ".", rev=rev, **remotes.consumer_options(remote))
        fs.repo  # noqa: B018 - resolves the revision now: an unknown one raises RevError here
        if not fs.exists(path):
            raise SeqmodelsError(f"{path} is not tracked at revision {label} of {source}",
                                 where=f"{path}@{label}",
                                 fix="name a DVC output of that revision (outputs/latents, "
                                 "outputs/scores/NAME, models/latest; `dvc ls --dvc-only REPO "
                                 "--rev REV` lists them) or a revision that has it (git log dvc.lock)")
        if fs.isdir(path):
            fs.ls(path)  # loads the folder's listing: data in neither cache nor remote fails here
        yield fs
    except RevError:
        raise SeqmodelsError(f"revision {rev} does not exist in {source}", where=f"--rev {rev}",
                             fix="use a commit, tag or branch of it (`git log`, `git tag`); for a URL, "
                             "one that was pushed to that git remote") from None
    except SeqmodelsError:
        raise
    except Exception as error:  # a storage failure becomes a RemoteError; anything else stays as is
        used = remotes.consumer_remote(remote, lambda: fs.repo.config)
        readable = remotes.failure(error, used, action=f"reading {path} at revision {label}",
                                   where=f"{path}@{label} of {source}")
        if readable is not None:
            raise readable from None
        if isinstance(error, (SCMError, DvcException)):
            raise SeqmodelsError(f"cannot open revision {label} of {source}: {error}",
                                 where=f"--rev {rev}", fix="use a commit, tag or branch of a git "
                                 "repository that uses DVC") from None
        raise
    finally:
        if fs is not None:
            fs.close()


def fetch_directory(path: str, target: Path, *, rev: str | None = None, repo: str | None = None,
                    remote: str | None = None) -> str | None:
    """Copy the DVC-tracked folder `path` as it was at `rev` into `target` (e.g. the
    detector a past commit trained); returns the commit `rev` resolved to."""
    with _revision(rev, repo, path, remote) as fs:
        if not fs.isdir(path):
            raise SeqmodelsError(f"{path} is a file, not a folder, at revision {rev or 'workspace'}",
                                 where=f"{path}@{rev or 'workspace'}", fix="name the folder that holds it")
        fs.get(path, str(target), recursive=True)
        return fs.repo.scm.resolve_rev(rev) if rev else None


def read_manifest(rev: str | None = None, *, path: str = DEFAULT_PATH, repo: str | None = None,
                  remote: str | None = None) -> dict[str, Any]:
    """The `_manifest.json` of the outputs at `rev` (None: the workspace)."""
    with _revision(rev, repo, path, remote) as fs:
        if not fs.exists(f"{path}/{MANIFEST}"):
            raise SeqmodelsError(f"{path} at revision {rev or 'workspace'} has no {MANIFEST}",
                                 where=f"{path}@{rev or 'workspace'}",
                                 fix="`outputs show` reads a published outputs folder (outputs/latents, "
                                 "outputs/scores/NAME)")
        with fs.open(f"{path}/{MANIFEST}", "r") as handle:
            return json.load(handle)


def iter_outputs(rev: str | None = None, *, path: str = DEFAULT_PATH, repo: str | None = None,
                 columns: list[str] | None = None, remote: str | None = None) -> Iterator[pa.Table]:
    """The Parquet parts of the outputs at `rev`, one row group at a time in part order:
    a consumer copies or aggregates any revision in the memory of one row group, each part
    streamed from the cache or the DVC remote as it is reached."""
    label = rev or "workspace"
    with _revision(rev, repo, path, remote) as fs:
        parts = sorted(name for name in fs.find(path) if name.endswith(".parquet"))
        if not parts:
            raise SeqmodelsError(f"{path} at revision {label} holds no Parquet files",
                                 where=f"{path}@{label}",
                                 fix="name a folder of Parquet parts (outputs/latents, "
                                 "outputs/scores/NAME/windows)")
        for part in parts:
            with fs.open(part, "rb") as handle:
                file = pq.ParquetFile(handle)
                missing = sorted(set(columns or ()) - set(file.schema_arrow.names))
                if missing:  # read_row_group would skip them silently
                    raise SeqmodelsError(f"cannot read columns {columns} of {part} at {label}: no column "
                                         f"{', '.join(missing)}; it has {', '.join(file.schema_arrow.names)}",
                                         where=part, fix="pick columns from that list")
                for group in range(max(file.num_row_groups, 1)):  # an empty part: its schema
                    try:
                        table = (file.read_row_group(group, columns=columns) if file.num_row_groups
                                 else file.read(columns=columns))
                    except pa.ArrowInvalid as error:  # a part Arrow cannot decode
                        raise SeqmodelsError(f"cannot read {part} at {label}: {str(error).splitlines()[0]}",
                                             where=part, fix="`seqmodels outputs show` prints the schema; "
                                             "republish the outputs of that revision") from None
                    yield table


def read_outputs(rev: str | None = None, *, path: str = DEFAULT_PATH, repo: str | None = None,
                 columns: list[str] | None = None, remote: str | None = None) -> pa.Table:
    """Every Parquet part of the outputs at `rev` as one Arrow table (`.to_pandas()` for
    pandas); `iter_outputs` for outputs larger than memory."""
    return pa.concat_tables(iter_outputs(rev, path=path, repo=repo, columns=columns, remote=remote))
