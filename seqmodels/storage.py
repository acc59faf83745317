"""Local paths and object-store URIs (s3://, gs://) as pyarrow filesystems, in one place.

Every reader and writer of a user-given location goes through `filesystem`, so an S3
endpoint other than AWS (MinIO, Ceph, a test server) is configured once, by the standard
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variables, for data sources, Ray Train's run
storage and published outputs alike. pyarrow 26's AWS SDK reads those variables itself,
but a filesystem built that way pickles with an empty endpoint, so a Ray worker whose
environment lacks them would talk to AWS instead: the endpoint and region are therefore
passed explicitly. Credentials are left to the SDK's standard chain (environment, profile,
instance role), so no secret is ever pickled into Ray's state.

Object stores have no rename, so `publish_remote` makes an output visible by writing its
manifest last: readers follow `_manifest.json` to exactly one complete generation of files
(`read_remote_manifest`, `remote_parts`) and never see a half-uploaded one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pyarrow
import pyarrow.fs

from seqmodels.errors import ConfigError, DataError, OutputError, SeqmodelsError

MANIFEST = "_manifest.json"  # the same name as seqmodels.publish.MANIFEST for local folders
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
DATA_PREFIX = "data-"
_CHUNK = 8 << 20
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_AWS_ERROR = re.compile(r"AWS Error [A-Z_]+ during \w+ operation")
_KEY = re.compile(r"key '([^']*)'")
log = logging.getLogger("seqmodels.storage")


def is_uri(text: str | os.PathLike[str]) -> bool:
    """Whether `text` names a location by scheme (s3://bucket/key, file:///x); a plain local
    path, relative or absolute, is not a URI."""
    return bool(_URI.match(str(text)))


def filesystem(location: str | os.PathLike[str]) -> tuple[pyarrow.fs.FileSystem, str]:
    """(pyarrow filesystem, path on it) for a local path or a URI. Local paths come back
    absolute (Ray and other processes may resolve them from another working directory)."""
    text = str(location)
    if not is_uri(text):
        return pyarrow.fs.LocalFileSystem(), str(Path(text).resolve())
    parsed = urlparse(text)
    if parsed.scheme.lower() == "s3" and not parsed.query and (_endpoint() or _region()):
        if not parsed.netloc:
            raise ConfigError(f"{text} names no bucket", where=text, fix="write s3://BUCKET/prefix")
        return _s3(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    try:  # other schemes, URI options (?region=...), or AWS itself with the bucket's region looked up
        found, path = pyarrow.fs.FileSystem.from_uri(text)
    except pyarrow.ArrowInvalid as error:
        raise ConfigError(f"{text} is not a usable location: {_first_line(error)}", where=text,
                          fix="use a local path, s3://bucket/prefix or gs://bucket/prefix") from None
    except OSError as error:
        raise readable_error(error, text) from None
    return found, path.rstrip("/") or path


def _endpoint() -> str | None:
    """The S3 endpoint the standard variables name (the service-specific one first), as the
    AWS SDKs and CLI read them; None for AWS itself."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


# The variables that say where S3 is (not who may use it): a cluster's workers get these from
# the driver (seqmodels.distributed.runtime), their credentials from their own nodes.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                      "AWS_REGION", "AWS_DEFAULT_REGION")


def endpoint_environment() -> dict[str, str]:
    """This process's S3 endpoint and region variables, for processes that do not inherit its
    environment: a Ray worker on another node opening an s3:// source with `filesystem`
    would otherwise talk to AWS itself rather than the MinIO or Ceph the driver reads."""
    return {name: os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)}


def _s3() -> pyarrow.fs.S3FileSystem:
    """An S3 filesystem with the endpoint and region from the environment spelled out."""
    options: dict[str, Any] = {"region": _region() or "us-east-1"}
    endpoint = _endpoint()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(scheme=parsed.scheme or "https",
                       endpoint_override=f"{parsed.netloc}{parsed.path.rstrip('/')}")
    return pyarrow.fs.S3FileSystem(**options)


def join(location: str, *names: str) -> str:
    """`location`/name/... in the location's own form: a URI stays a URI."""
    if is_uri(location):
        return "/".join([location.rstrip("/"), *names])
    return str(Path(location, *names))


def stem(location: str | os.PathLike[str]) -> str:
    """The file name without its suffix, for paths and URIs alike (pathlib.Path would turn
    s3://bucket into s3:/bucket)."""
    return PurePosixPath(urlparse(str(location)).path if is_uri(location) else str(location)).stem


def _table_name(name: str) -> bool:
    """A CSV/Parquet file that is not hidden: `_SUCCESS`, `_manifest.json`, `.part` files and
    the like are writers' bookkeeping (Spark, Ray, this project), never data."""
    return name.lower().endswith(TABLE_SUFFIXES) and not name.startswith(("_", "."))


def table_files(location: str | os.PathLike[str]) -> list[str]:
    """The CSV/Parquet file `location` names, or every such file directly inside the folder
    or prefix it names (sorted, in the location's own form); a DataError when there is none."""
    text = str(location)
    fs, path = filesystem(text)
    info = _info(fs, path, text)
    if info.type == pyarrow.fs.FileType.File:
        if not text.lower().endswith(TABLE_SUFFIXES):
            raise DataError(f"unsupported file type {Path(info.base_name).suffix!r} for {text}", where=text,
                            fix="use a .csv or .parquet file")
        return [text]
    if info.type == pyarrow.fs.FileType.NotFound:
        raise _missing(fs, path, text)
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(path))
    except OSError as error:
        raise readable_error(error, text) from None
    names = sorted(entry.base_name for entry in entries
                   if entry.type == pyarrow.fs.FileType.File and _table_name(entry.base_name))
    if not names:
        raise DataError(f"no CSV/Parquet file directly inside {text}", where=text,
                        fix="put .csv/.parquet files in it (subfolders are not read), or name one file")
    return [join(text, name) for name in names]


def _info(fs: pyarrow.fs.FileSystem, path: str, location: str) -> pyarrow.fs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as error:
        raise readable_error(error, location) from None


def _missing(fs: pyarrow.fs.FileSystem, path: str, location: str) -> DataError:
    """'does not exist', naming the bucket when it is the bucket that is missing: the fix
    differs (create the bucket vs. upload the file or correct the key)."""
    if isinstance(fs, pyarrow.fs.S3FileSystem):
        bucket = path.split("/", 1)[0]
        if _info(fs, bucket, location).type == pyarrow.fs.FileType.NotFound:
            return DataError(f"bucket {bucket!r} does not exist (for {location})", where=location,
                             fix="create the bucket, or correct its name; the S3 endpoint is "
                                 f"{_endpoint_text()}")
    fix = ("upload it, or correct the key (keys are case-sensitive)" if is_uri(location)
           else "correct the path, or create the file")
    return DataError(f"{location} does not exist", where=location, fix=fix)


@contextlib.contextmanager
def open_input(location: str | os.PathLike[str]) -> Iterator[pyarrow.NativeFile]:
    """A seekable binary file for `location`, as pandas.read_csv and pyarrow.parquet read
    it; a missing file or an unreachable store is a DataError naming the location."""
    text = str(location)
    fs, path = filesystem(text)
    try:
        handle = fs.open_input_file(path)
    except FileNotFoundError:
        raise _missing(fs, path, text) from None
    except OSError as error:
        raise readable_error(error, text) from None
    with handle:
        yield handle


# --- readable failures ---------------------------------------------------------------------

_CAUSES: list[tuple[tuple[str, ...], str, str]] = [
    (("NO_SUCH_BUCKET",), "its bucket does not exist",
     "create the bucket, or correct its name in the location"),
    (("NO_SUCH_KEY",), "it does not exist", "upload it or correct the key (names are case-sensitive)"),
    (("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN",
      "response code: 403"), "access denied",
     "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE "
     "or the machine's role) and the bucket's policy"),
    (("NETWORK_CONNECTION", "curlCode", "Could not connect", "Couldn't resolve", "Connection refused",
      "Timeout was reached"), "the object store cannot be reached",
     "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 (unset both for AWS itself) and the network; "
     "the endpoint is {endpoint}"),
]


def describe(error: OSError, location: str, action: str = "read") -> tuple[str, str]:
    """(what, fix) for an OSError pyarrow raised at `location`: the AWS SDK's messages name
    an error code deep in a long line; this says which of the usual causes it is."""
    text = str(error)
    if isinstance(error, FileNotFoundError):
        return f"cannot {action} {location}: it does not exist", "correct the location or create it first"
    if isinstance(error, PermissionError) and not is_uri(location):
        return (f"cannot {action} {location}: permission denied",
                f"make {location} {'readable' if action == 'read' else 'writable'} for this user")
    code, key = _AWS_ERROR.search(text), _KEY.search(text)
    detail = f" ({code.group(0)}{f', key {key.group(1)}' if key else ''})" if code else \
        f" ({_first_line(error)[:200]})"
    for needles, reason, fix in _CAUSES:
        if any(needle in text for needle in needles):
            return f"cannot {action} {location}: {reason}{detail}", fix.format(endpoint=_endpoint_text())
    return (f"cannot {action} {location}: {type(error).__name__}{detail}",
            f"check the location and that the store is up; the S3 endpoint is {_endpoint_text()}")


def readable_error(error: OSError, location: str, kind: type[SeqmodelsError] = DataError,
                   action: str = "read") -> SeqmodelsError:
    """`error` as a SeqmodelsError of `kind` (DataError for inputs) naming `location`."""
    what, fix = describe(error, location, action)
    return kind(what, where=location, fix=fix)


def _endpoint_text() -> str:
    endpoint = _endpoint()
    return endpoint if endpoint else "AWS itself (AWS_ENDPOINT_URL is not set)"


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


# --- publishing to object stores -------------------------------------------------------------

def new_generation() -> str:
    """UTC time to the microsecond, then a short uuid: generations sort in the order they
    started, and two publishers never collide."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def publish_remote(local_dir: Path, uri: str) -> None:
    """Publish the finished folder `local_dir` at `uri`, never half: its files go under
    `<uri>/data-<generation>/`, then `<uri>/_manifest.json` (the local manifest plus
    `generation` and `files`) is written in one object write, which S3 makes visible whole
    or not at all. Older generations are deleted only after that. On a failure this
    attempt's files are deleted (best effort) and an OutputError says the previously
    published version is unchanged. Meant for one publisher per `uri` at a time (a DVC
    stage): a concurrent publish that started later is left alone, not cleaned up."""
    local_dir = Path(local_dir)
    try:
        fs, root = filesystem(uri)
    except SeqmodelsError as error:
        raise OutputError(error.what, where=uri, fix=error.fix) from None
    generation = new_generation()
    folder = f"{DATA_PREFIX}{generation}"
    files = sorted(p for p in local_dir.rglob("*")
                   if p.is_file() and p.relative_to(local_dir).as_posix() != MANIFEST)
    keys = [f"{folder}/{p.relative_to(local_dir).as_posix()}" for p in files]
    manifest = {**_local_manifest(local_dir), "generation": generation, "files": keys}
    try:
        for path, key in zip(files, keys, strict=True):
            _upload(fs, path, f"{root}/{key}")
    except OSError as error:
        _discard(fs, f"{root}/{folder}")
        raise _publish_error(error, local_dir, uri) from None
    try:
        _write_manifest(fs, root, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    except OSError as error:
        _after_failed_manifest(fs, root, generation, error, local_dir, uri)
    _delete_older(fs, root, generation)


def _local_manifest(local_dir: Path) -> dict[str, Any]:
    """The folder's own manifest (model hash, params, row counts, ...); {} when it has none."""
    path = local_dir / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _upload(fs: pyarrow.fs.FileSystem, source: Path, target: str) -> None:
    if isinstance(fs, pyarrow.fs.LocalFileSystem):  # object stores have no folders to make
        fs.create_dir(posixpath.dirname(target), recursive=True)
    with source.open("rb") as handle, fs.open_output_stream(target) as stream:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            stream.write(chunk)


def _write_manifest(fs: pyarrow.fs.FileSystem, root: str, content: bytes) -> None:
    """One object write on a store; on a local disk a temporary sibling renamed over it, so
    there too a reader sees the old manifest or the new one."""
    target = f"{root}/{MANIFEST}"
    if not isinstance(fs, pyarrow.fs.LocalFileSystem):
        with fs.open_output_stream(target) as stream:
            stream.write(content)
        return
    fs.create_dir(root, recursive=True)
    temporary = f"{root}/.{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(temporary) as stream:
        stream.write(content)
    fs.move(temporary, target)


def _after_failed_manifest(fs: pyarrow.fs.FileSystem, root: str, generation: str, error: OSError,
                           local_dir: Path, uri: str) -> None:
    """A manifest write that raised may still have landed (a connection dropped while the
    reply was on its way): ask the store which generation is published before deleting
    anything, because deleting the files a live manifest names would break the output."""
    try:
        current = _published_generation(fs, root)
    except OSError:
        raise _publish_error(error, local_dir, uri, unsure=f"{DATA_PREFIX}{generation}") from None
    if current == generation:
        return  # it did land: the publish succeeded
    _discard(fs, f"{root}/{DATA_PREFIX}{generation}")
    raise _publish_error(error, local_dir, uri) from None


def _published_generation(fs: pyarrow.fs.FileSystem, root: str) -> str | None:
    try:
        with fs.open_input_stream(f"{root}/{MANIFEST}") as stream:
            return json.loads(stream.read()).get("generation")
    except FileNotFoundError:
        return None
    except ValueError:  # a manifest that is not JSON names no generation of ours
        return None


def _discard(fs: pyarrow.fs.FileSystem, folder: str) -> None:
    """Best effort: what cannot be deleted now (the store is down) is an older generation to
    the next publish, which deletes it."""
    try:
        if fs.get_file_info(folder).type != pyarrow.fs.FileType.NotFound:
            fs.delete_dir(folder)
    except OSError as error:
        log.warning("could not delete %s (%s); the next publish removes it", folder, _first_line(error))


def _delete_older(fs: pyarrow.fs.FileSystem, root: str, generation: str) -> None:
    """Generations that started before this one (the previous output, or the leftovers of a
    killed publish); a failure here only leaves garbage that the next publish deletes."""
    ours = f"{DATA_PREFIX}{generation}"
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(root))
    except OSError as error:
        log.warning("could not list %s to delete older generations (%s)", root, _first_line(error))
        return
    for entry in entries:
        if entry.base_name.startswith(DATA_PREFIX) and entry.base_name < ours:
            if entry.type == pyarrow.fs.FileType.Directory:
                _discard(fs, entry.path)
            else:
                with contextlib.suppress(OSError):
                    fs.delete_file(entry.path)


def _publish_error(error: OSError, local_dir: Path, uri: str, unsure: str | None = None) -> OutputError:
    what, fix = describe(error, uri, action="publish to")
    if unsure is None:
        outcome = "the previously published version is unchanged"
    else:  # the manifest write's outcome is unknown: either state is whole
        outcome = (f"{uri} holds either the previously published version, unchanged, or this one, complete "
                   f"(this attempt's {unsure}/ is removed by the next publish if unused)")
    return OutputError(f"could not publish {local_dir}: {what}", where=uri,
                       fix=f"{fix}; then rerun: {outcome}")


def read_remote_manifest(uri: str) -> dict[str, Any]:
    """The manifest published at `uri`: it names the one generation of files to read."""
    location = join(uri, MANIFEST)
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as stream:
            content = stream.read()
    except FileNotFoundError:
        raise DataError(f"nothing is published at {uri} (no {MANIFEST})", where=uri,
                        fix="run the stage that publishes there, or correct the location") from None
    except OSError as error:
        raise readable_error(error, location) from None
    try:
        manifest = json.loads(content)
    except ValueError as error:
        raise DataError(f"{location} is not valid JSON ({error})", where=location,
                        fix="publish the output again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise DataError(f"{location} lists no files", where=location, fix="publish the output again")
    return manifest


def remote_parts(uri: str) -> list[str]:
    """The Parquet files of the generation published at `uri`, as full locations."""
    return [join(uri, key) for key in read_remote_manifest(uri)["files"] if key.endswith((".parquet", ".pq"))]
