"""Sources and outputs named by URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``), through pyarrow.fs.

Any other scheme (``https://``, ``hf://``, ``memory://``, ...) goes through fsspec when the
``fsspec`` extra is installed, wrapped as a pyarrow filesystem
(``PyFileSystem(FSSpecHandler(...))``), so it streams and reads Parquet by ranges like the rest.

pyarrow's filesystem layer does the work: ``FileSystem.from_uri`` picks the filesystem and
takes its settings from the URI and the environment (S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, and
``AWS_ENDPOINT_URL`` for S3-compatible stores; GCS: ``GOOGLE_APPLICATION_CREDENTIALS``;
HDFS: ``HADOOP_HOME`` / ``ARROW_LIBHDFS_DIR``). Everything here names the URI the user
wrote in its errors.

A remote endpoint that accepts connections and never answers must not stall a run: S3
requests wait at most ``remote_timeout`` seconds (the CLI's option) (default 10, or ``LOSSCTL_REMOTE_TIMEOUT``)
to connect and for an answer, and are tried at most twice; an error then says that the
endpoint did not answer, naming it and the timeout.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import re
import urllib.parse

from lossctl.errors import DataError, UsageError, opt, short_reason

DEFAULT_TIMEOUT = 10.0
ATTEMPTS = 2  # one retry: a transient error is survived, a dead endpoint costs at most 2 x the timeout
_timeout: float | None = None

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

_HINTS = {
    "s3": "s3:// takes credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_ENDPOINT_URL for an "
    "S3-compatible store, AWS_DEFAULT_REGION for the region)",
    "gs": "gs:// takes credentials from GOOGLE_APPLICATION_CREDENTIALS (a service-account key file)",
    "hdfs": "hdfs:// needs Hadoop's libhdfs and a JVM (HADOOP_HOME, JAVA_HOME, ARROW_LIBHDFS_DIR)",
}


def _hint(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    scheme = "gs" if scheme == "gcs" else scheme
    return _HINTS.get(
        scheme,
        "pyarrow reads s3://, gs://, hdfs:// and file://; other schemes (https://, hf://, memory://, ...) "
        "go through fsspec (pip install 'lossctl[fsspec]')",
    )


def is_uri(text: str) -> bool:
    return bool(_URI.match(text))


# Schemes whose paths inside the filesystem are "bucket/key" (the rest: the URI's path).
_BUCKETED = ("s3", "gs", "gcs")


def _parse_timeout(value, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"{what} must be a positive number of seconds; got {value!r}.")
    return seconds


def set_timeout(seconds: float | None) -> None:
    """The remote_timeout option of this run: the longest wait for a remote endpoint to connect or
    answer (None: LOSSCTL_REMOTE_TIMEOUT, else DEFAULT_TIMEOUT)."""
    global _timeout
    value = None if seconds is None else _parse_timeout(seconds, opt("remote_timeout"))
    _timeout = value


def timeout() -> float:
    if _timeout is not None:
        return _timeout
    env = os.environ.get("LOSSCTL_REMOTE_TIMEOUT", "").strip()
    return _parse_timeout(env, "LOSSCTL_REMOTE_TIMEOUT") if env else DEFAULT_TIMEOUT


def _bounded(fs, seconds: float | None = None):
    """An S3 filesystem with bounded connect / request timeouts and retries (the SDK's defaults
    wait ~99 s on an endpoint that accepts connections and never answers)."""
    import pyarrow.fs as pafs

    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    # curl counts the request timeout in whole seconds (a fraction falls back to its default).
    seconds = float(max(1, math.ceil(timeout() if seconds is None else seconds)))
    try:
        settings = dict(fs.__reduce__()[1][0])  # from_uri's resolved settings (endpoint, region, ...)
        settings.pop("retry_strategy", None)
        settings.update(connect_timeout=seconds, request_timeout=seconds)
        return pafs.S3FileSystem(**settings, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS))
    except (TypeError, ValueError, IndexError, AttributeError):  # pragma: no cover - another pyarrow's layout
        return fs


def _endpoint(fs) -> str:
    try:
        settings = fs.__reduce__()[1][0]
    except Exception:  # noqa: BLE001
        return "the remote endpoint"
    if settings.get("endpoint_override"):
        return f"the endpoint {settings['endpoint_override']}"
    return f"the S3 endpoint of region {settings.get('region') or 'us-east-1'}"


def reason(exc: BaseException, uri: str) -> str:
    """What went wrong with ``uri``, for an error message: a timeout says that the endpoint did not
    answer, naming it and the timeout; anything else is the library's own first line."""
    text = str(exc)
    if "curlCode: 28" in text or "Timeout was reached" in text or "timed out" in text.lower():
        try:
            where = _endpoint(resolve(uri)[0])
        except DataError:
            where = "the remote endpoint"
        return (
            f"{where} did not answer within {timeout():g} s ({opt('remote_timeout')} SECONDS, "
            f"{ATTEMPTS} attempts); check that the endpoint is up and reachable"
        )
    return short_reason(exc)


@functools.lru_cache(maxsize=64)
def _filesystem(root: str, seconds: float):
    """One filesystem per bucket / host and timeout (S3 looks up the bucket's region once, not per file)."""
    import pyarrow.fs as pafs

    return _bounded(pafs.FileSystem.from_uri(root)[0], seconds)


# Schemes pyarrow serves itself; every other one goes through fsspec.
_NATIVE = (*_BUCKETED, "file", "hdfs", "viewfs")


@functools.lru_cache(maxsize=64)
def _fsspec_filesystem(protocol: str, options: tuple):
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fsspec.filesystem(protocol, **dict(options))))


def _via_fsspec(uri: str):
    scheme = uri.split("://", 1)[0].lower()
    try:
        import fsspec
    except ImportError:
        raise DataError(
            f"{uri}: {scheme}:// is read through fsspec, which is not installed; "
            "install it with pip install 'lossctl[fsspec]'."
        ) from None
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise DataError(f"{uri}: cannot open this URI ({short_reason(exc)}). {_hint(uri)}.") from None
    options = cls._get_kwargs_from_urls(uri) if hasattr(cls, "_get_kwargs_from_urls") else {}
    path = cls._strip_protocol(uri)
    if scheme in ("http", "https"):
        path = uri  # fsspec's HTTP filesystem addresses files by their whole URL
        # Read-ahead blocks of 256 KiB (fsspec's default is 5 MiB, which fetches a whole small file
        # to read a Parquet footer); Parquet still reads only the column chunks it needs.
        options.setdefault("block_size", 1 << 18)
    return _fsspec_filesystem(scheme, tuple(sorted(options.items()))), path


def resolve(uri: str):
    """(filesystem, path inside it) for ``uri``; a clear error when the scheme cannot be served."""
    import pyarrow.fs as pafs

    u = urllib.parse.urlsplit(uri)
    if u.scheme.lower() not in _NATIVE:
        return _via_fsspec(uri)
    seconds = timeout()  # a bad LOSSCTL_REMOTE_TIMEOUT is a usage error of its own
    try:
        if u.scheme in _BUCKETED or u.scheme in ("file", "hdfs", "viewfs"):
            root = f"{u.scheme}://{u.netloc}/" + (f"?{u.query}" if u.query else "")
            path = u.netloc + u.path if u.scheme in _BUCKETED else u.path
            return _filesystem(root, seconds), urllib.parse.unquote(path)
        fs, path = pafs.FileSystem.from_uri(uri)
        return _bounded(fs, seconds), path
    except Exception as exc:  # noqa: BLE001 - unknown scheme, missing libhdfs, bad URI
        raise DataError(f"{uri}: cannot open this URI ({short_reason(exc)}). {_hint(uri)}.") from None


def kind(uri: str) -> str:
    """'file', 'dir' or 'missing'."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except Exception as exc:  # noqa: BLE001 - no credentials, no network, no bucket
        raise DataError(f"{uri}: cannot look it up ({reason(exc, uri)}). {_hint(uri)}.") from None
    if info.type == pafs.FileType.File:
        return "file"
    if info.type == pafs.FileType.Directory:
        return "dir"
    return "missing"


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def listing(uri: str) -> list[str]:
    """The files under a directory URI (recursively) or matching a glob URI, as URIs, sorted.

    Names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files) are skipped, as for local
    directories.
    """
    import pyarrow.fs as pafs

    scheme_end = _URI.match(uri).end()
    prefix, rest = uri[:scheme_end], uri[scheme_end:]
    globbed = any(ch in rest for ch in "*?[")
    if globbed:
        cut = min(rest.index(ch) for ch in "*?[" if ch in rest)
        root_rest = rest[: rest.rfind("/", 0, cut) + 1] if "/" in rest[:cut] else ""
    else:
        root_rest = rest
    fs, root = resolve(prefix + root_rest.rstrip("/") if root_rest else uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{uri}: cannot list it ({reason(exc, uri)}). {_hint(uri)}.") from None
    # Listed paths are inside the filesystem; give them back as URIs under the same prefix.
    head = (prefix + root_rest.rstrip("/")) if root_rest else prefix
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root.rstrip("/")) :].lstrip("/") if info.path.startswith(root.rstrip("/")) else info.path
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        full = join(head, rel)
        if globbed and not fnmatch.fnmatchcase(full, uri):
            continue
        out.append(full)
    return sorted(out)


def open_input_file(uri: str, display: str):
    """A random-access pyarrow file for ``uri`` (Parquet footers, Arrow IPC)."""
    fs, path = resolve(uri)
    try:
        return fs.open_input_file(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{display}: cannot open ({reason(exc, uri)}). {_hint(uri)}.") from None


def open_input_stream(uri: str, display: str, compression: str | None = "detect"):
    fs, path = resolve(uri)
    try:
        return fs.open_input_stream(path, compression=compression)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{display}: cannot open ({reason(exc, uri)}). {_hint(uri)}.") from None
