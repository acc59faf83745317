"""The DVC remote: where a producer pushes versioned outputs so that consumers on other
machines can read any revision of them, and what its failures mean.

The remote is configured the DVC way (`dvc remote add -d NAME URL`, committed in
.dvc/config without credentials; secrets in the environment or .dvc/config.local), so a
consumer's `git clone` already knows where the data is. This module adds what DVC leaves to
its callers: a push that is skipped with a note when no remote is set (so `make repro`
works before anyone sets one up), and one readable error per way a remote can fail,
instead of DVC's "unexpected error" or a data-index traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqmodels.errors import RemoteError

SETUP_FIX = ("configure the producer's remote once and commit .dvc/config: "
             "`dvc remote add -d storage s3://BUCKET/PATH` (README, 'Sharing outputs')")
# What DVC names the repository's own cache when it opens a repository without a default
# remote (dvc/repo/open_repo.py): for a message, that is "no remote".
OWN_CACHE = "auto-generated-upstream"
CREDENTIALS_FIX = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to keys the remote "
                   "accepts, or store them outside git: `dvc remote modify --local NAME access_key_id ...`")


@dataclass(frozen=True)
class Remote:
    """A DVC remote by name and URL, as a message names it."""

    name: str
    url: str

    def __str__(self) -> str:
        return f"DVC remote '{self.name}' ({self.url})"


def consumer_options(remote: str | None) -> dict[str, Any]:
    """DVCFileSystem keywords for a consumer's `--remote`: a URL reads from that location
    (a revision committed before the remote was configured, or a mirror); a name picks one
    of the repository's remotes; None keeps the revision's own default remote."""
    if remote is None:
        return {}
    if "://" in remote or remote.startswith(("/", ".")):
        return {"remote": "consumer", "remote_config": {"url": remote}}
    return {"remote": remote}


def consumer_remote(remote: str | None, config: Callable[[], Any]) -> Remote | None:
    """The remote a consumer read from, for its error message: its `--remote`, else the
    default of the revision's config (`config()`; None when that cannot be read either)."""
    if "remote_config" in consumer_options(remote):
        return Remote("consumer", str(remote))
    try:
        return configured_remote(config(), remote)
    except Exception:  # it only names the remote in a message about another failure
        return None


def configured_remote(config: Any, name: str | None = None) -> Remote | None:
    """The remote `name` (default: core.remote) in a DVC config, or None when none is set."""
    name = name or config["core"].get("remote")
    if not name or name == OWN_CACHE:
        return None
    section = config["remote"].get(name)
    if section is None:
        raise RemoteError(f"the DVC config names remote '{name}', which it does not define",
                          where=".dvc/config", fix=f"`dvc remote list`; add it: dvc remote add {name} URL")
    return Remote(name, str(section["url"]))


def failure(error: BaseException, remote: Remote | None, *, action: str, where: str) -> RemoteError | None:
    """The readable form of a storage failure while `action` (e.g. "reading outputs/latents
    at v1"), or None when `error` is not one (the caller re-raises it)."""
    kind = _kind(error)
    if kind is None:
        return None
    if kind == "missing":
        if remote is None:
            return RemoteError(f"{action}: the data is not in this checkout's DVC cache and no DVC remote "
                               "is configured, so there is nowhere else to read it from",
                               where=where, fix="pass the producer's remote (--remote URL, e.g. "
                               "s3://BUCKET/PATH; `dvc remote list` in the producer's checkout), or "
                               "read in the producer's checkout (--repo PATH); " + SETUP_FIX)
        return RemoteError(f"{action}: the data is neither in this checkout's DVC cache nor in {remote}",
                           where=where, fix="the producer has not pushed this revision: in its "
                           "checkout, `make publish` (dvc push) at that revision, or `dvc push "
                           "--all-commits` for every revision its cache still holds")
    target = str(remote) if remote else "the DVC remote"
    if kind == "credentials":
        return RemoteError(f"{action}: {target} refused the credentials ({_first_line(error)})",
                           where=where, fix=CREDENTIALS_FIX)
    return RemoteError(f"{action}: {target} cannot be reached ({_first_line(error)})", where=where,
                       fix="check the network and the remote's endpoint (`dvc remote modify NAME "
                       "endpointurl URL`, or AWS_ENDPOINT_URL for an S3-compatible server), then retry")


def push(root: Path | str = ".", targets: Sequence[str] | None = None, *,
         require: bool = True) -> tuple[Remote, int] | None:
    """Push the cached outputs of `targets` (default: every stage in dvc.lock) to the default
    remote; that remote and the number of files sent, or None when no remote is set and
    `require` is False."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remote = configured_remote(repo.config)
        if remote is None:
            if require:
                raise RemoteError("no DVC remote is configured, so there is nowhere to push to",
                                  where=str(Path(root).resolve() / ".dvc" / "config"), fix=SETUP_FIX)
            return None
        try:
            return remote, repo.push(targets=list(targets) if targets else None)
        except Exception as error:  # botocore's errors are neither DvcException nor OSError
            readable = failure(error, remote, action="dvc push", where=remote.url)
            if readable is not None:
                raise readable from None
            if not isinstance(error, (DvcException, OSError)):
                raise
            raise RemoteError(f"dvc push to {remote} failed: {_first_line(error)}", where=remote.url,
                              fix="`dvc status --cloud` lists what is missing; "
                              "rerun `dvc repro` if outputs are absent from the cache") from None


def push_report(root: Path | str = ".", targets: Sequence[str] | None = None, *,
                require: bool = False) -> str:
    """What every producer path runs after it updates dvc.lock: push, and the line to print;
    with no remote and `require` False, the line says where the outputs stay instead."""
    pushed = push(root, targets, require=require)
    if pushed is None:
        return ("no DVC remote configured: the outputs stay in this checkout's DVC cache; consumers on "
                "other machines need one (README, 'Sharing outputs')")
    remote, count = pushed
    return (f"pushed {count} new files to {remote}; commit and `git push` dvc.lock so consumers can "
            "name this revision")


def _chain(error: BaseException):
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _kind(error: BaseException) -> str | None:
    """credentials | unreachable | missing for the failures a remote causes, else None.

    The whole chain is read first: DVC reports a remote it could not reach or was refused by
    as a folder it "failed to load", with the real cause behind it."""
    from dvc_data.index.index import DataIndexDirError

    kinds = set()
    for link in _chain(error):
        name = type(link).__name__
        text = str(link)
        if isinstance(link, PermissionError) or name in {"NoCredentialsError", "PartialCredentialsError"} \
                or any(code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch",
                                                 "AccessDenied", "Forbidden", "(403)")):
            kinds.add("credentials")
        elif name in {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                      "ServerDisconnectedError"} \
                or isinstance(link, ConnectionError) or "Could not connect to the endpoint" in text:
            kinds.add("unreachable")
        elif isinstance(link, DataIndexDirError) or "No storage files available" in text:
            kinds.add("missing")
    return next((kind for kind in ("credentials", "unreachable", "missing") if kind in kinds), None)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
