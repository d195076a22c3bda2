"""Outputs: staged, checked before a run reads anything, and committed together or not at all.

Every file a run writes (per-sample rows, gradients, a saved state, JUnit XML) is an
:class:`AtomicFile`. While the command's :class:`Outputs` is open, finishing a file only
stages it; the CLI commits every staged output once the whole run, report included, has
succeeded, and removes them all otherwise (an error, a signal). :func:`preflight` refuses an
output that would overwrite an input, the check config, a state being merged or another
output, before any input is read. No NumPy here: the CLI imports this for every command.
"""

from __future__ import annotations

import contextvars
import errno
import os
import re
import shutil
import stat
import sys
import tempfile

from lossctl.errors import DataError, UsageError, short_reason


class AtomicFile:
    """An output staged in a temporary file and published by ``commit``.

    A regular file (or a new path) is staged next to the target and renamed onto it; the
    staged file gets the target's mode when it exists, else the mode the process umask gives
    a new file. A character device or FIFO (``/dev/null``, ``/dev/stdout``, a named pipe) is
    never replaced: the output is staged in an anonymous temporary file and copied into it.
    A URI is staged in TMPDIR and uploaded. While a run's :class:`Outputs` is open, ``commit``
    only stages: the run publishes every output together once it has succeeded.
    """

    def __init__(self, path: str, option: str):
        from lossctl.io.remote import is_uri, resolve

        self.path = path
        self.option = option
        self.remote = None
        self.special = False
        self.tmp = None
        self.done = False
        if is_uri(path):
            # A URI (s3://...): written to a local temporary file, uploaded by ``commit``.
            self.remote = resolve(path)
            held = _hold_signals()
            try:
                fd, self.tmp = tempfile.mkstemp(prefix="lossctl-upload-", suffix=".tmp")
                self.fh = os.fdopen(fd, "wb")
                _track(self)
            finally:
                _release_signals(held)
            return
        st = target_stat(path, option)
        self.fd = fd_alias(path)
        if self.fd is not None or (st is not None and _is_special(st)):
            self.special = True
            self.fh = tempfile.TemporaryFile()  # anonymous: nothing is left behind, whatever happens
            _track(self)
            return
        directory = os.path.dirname(os.path.abspath(path)) or "."
        check_directory(path, option)
        base = os.path.basename(path)
        while len(os.fsencode(base)) > _TMP_BASE_MAX:  # the temporary name must stay a legal name
            base = base[:-1]
        held = _hold_signals()  # a signal between creating the file and tracking it would leave it behind
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
            self.fh = os.fdopen(fd, "wb")
            _track(self)
        except OSError as exc:
            raise DataError(f"{option} {path}: cannot write there ({exc.strerror}).") from None
        finally:
            _release_signals(held)
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        except OSError:
            pass  # a filesystem without modes (FAT, some mounts): its default stands

    def write(self, data: bytes) -> None:
        try:
            self.fh.write(data)
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> DataError:
        self.abort()
        reason = exc.strerror or short_reason(exc)
        return DataError(
            f"{self.option} {self.path}: writing failed ({reason}). Nothing was written; "
            "expected room for the whole output: free space, raise the file-size limit or choose another path."
        )

    def commit(self) -> None:
        """Finish writing; publish now, or when the run's outputs are committed together."""
        try:
            if self.special:
                self.fh.flush()
            else:
                self.fh.close()
        except OSError as exc:
            raise self._failed(exc) from None
        outputs = _CURRENT.get()
        if outputs is not None:
            outputs.staged.append(self)
            return
        self.publish()

    def publish(self) -> None:
        try:
            if self.remote is not None:
                self._upload()
            elif self.special:
                self._copy_into()
            else:
                try:
                    os.replace(self.tmp, self.path)
                except OSError as exc:
                    raise DataError(
                        f"{self.option} {self.path}: cannot put the output in place ({exc.strerror})."
                    ) from None
            self.done = True
        finally:
            if not self.done:
                self.abort()

    def _copy_into(self) -> None:
        """Copy the staged bytes into a device or FIFO, opened without creating or truncating it."""
        self.fh.seek(0)
        try:
            if self.fd is not None:  # /dev/stdout and the like: this process's descriptor, where it stands
                if self.fd in (1, 2):
                    (sys.stdout if self.fd == 1 else sys.stderr).flush()
                fd = os.dup(self.fd)
            else:
                fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(self.fh, out, 1 << 20)
        except BrokenPipeError:
            pass  # the reader went away (`| head`), as with -
        except OSError as exc:
            raise DataError(
                f"{self.option} {self.path}: writing failed ({exc.strerror or short_reason(exc)})."
            ) from None
        finally:
            self.fh.close()

    def _upload(self) -> None:
        import pyarrow.fs as pafs

        fs, path = self.remote
        try:
            pafs.copy_files(self.tmp, path, destination_filesystem=fs)
        except Exception as exc:  # noqa: BLE001 - no credentials, no bucket, no network
            from lossctl.io.remote import _hint, reason

            raise DataError(
                f"{self.option} {self.path}: the upload failed ({reason(exc, self.path)}). {_hint(self.path)}."
            ) from None
        finally:
            os.unlink(self.tmp)
            self.tmp = None

    def abort(self) -> None:
        try:
            self.fh.close()  # flushes buffered bytes, which fails again on a full disk
        except OSError:
            pass  # the file is discarded anyway; the error that led here is the one to report
        finally:
            if self.tmp is not None and not self.done:
                try:
                    os.unlink(self.tmp)
                except OSError:
                    pass
                self.tmp = None


# ---------------------------------------------------------------------------
# One run's outputs: checked before anything is read, committed together or not at all
# ---------------------------------------------------------------------------

_TMP_BASE_MAX = 200  # bytes of the target's name kept in its temporary name (".NAME.XXXXXXXX.tmp" <= 255)

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("lossctl_outputs", default=None)


class Outputs:
    """Every output of one run (the CLI opens one per command). Outputs finished during the
    run are staged; ``commit`` publishes them all (uploads first, then devices, then renames)
    and ``abort`` removes every staged and unfinished one and runs the ``on_abort`` cleanups
    (e.g. the per-sample parts the Dask engine's workers wrote). Threads other than the one
    that opened it (Dask workers in this process) publish at once, as without a run."""

    def __init__(self):
        self.files: list[AtomicFile] = []
        self.staged: list[AtomicFile] = []
        self.cleanups: list = []
        self._token = _CURRENT.set(self)

    def on_abort(self, fn) -> None:
        self.cleanups.append(fn)

    def commit(self) -> None:
        self._close()
        order = sorted(self.staged, key=lambda f: 0 if f.remote is not None else (1 if f.special else 2))
        try:
            for f in order:
                f.publish()
        except BaseException:
            self.abort()
            raise
        self.files, self.staged, self.cleanups = [], [], []

    def abort(self) -> None:
        self._close()
        for f in self.files:
            f.abort()
        self.staged = []
        for fn in self.cleanups:
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort; the failure that led here is reported
                pass
        self.cleanups = []

    def _close(self) -> None:
        if self._token is not None:
            try:
                _CURRENT.reset(self._token)
            except ValueError:  # reset from another context: clear it instead
                _CURRENT.set(None)
            self._token = None


def current_outputs() -> Outputs | None:
    return _CURRENT.get()


def _track(f: AtomicFile) -> None:
    outputs = _CURRENT.get()
    if outputs is not None:
        outputs.files.append(f)


_HELD = ("SIGINT", "SIGTERM", "SIGHUP")


def _hold_signals():
    """Block Ctrl-C, SIGTERM and SIGHUP in this thread (delivered when released)."""
    import signal

    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, [getattr(signal, n) for n in _HELD if hasattr(signal, n)])
    except (AttributeError, OSError, ValueError):
        return None


def _release_signals(previous) -> None:
    import signal

    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


_FD_PATH = re.compile(r"^/(?:dev/fd|proc/(?:self|thread-self|\d+)/fd)/(\d+)$")


def fd_alias(path: str) -> int | None:
    """The descriptor a path such as /dev/stdout or /dev/fd/3 names in this process (None if
    none): written through that descriptor, it keeps its offset (and append mode)."""
    path = os.path.normpath(path) if path.startswith("/") else path
    if path in ("/dev/stdout", "/dev/stderr"):
        return 1 if path == "/dev/stdout" else 2
    m = _FD_PATH.match(path)
    if m is None or (path.startswith("/proc/") and path.split("/")[2] not in ("self", "thread-self", str(os.getpid()))):
        return None
    return int(m.group(1))


def _is_special(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)


def target_stat(path: str, option: str) -> os.stat_result | None:
    """The stat of an output's existing target (following links), None for a new path; a
    directory, block device or socket is refused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
            return None  # check_directory names the problem
        raise DataError(f"{option} {path}: cannot use it as an output ({exc.strerror}).") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{option} {path}: is a directory; expected a file path.")
    if stat.S_ISREG(st.st_mode) or _is_special(st):
        return st
    kind = "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file"
    raise UsageError(
        f"{option} {path}: is {kind}; expected a regular file path (or a character device or FIFO, "
        "written in place, or - for stdout)."
    )


def check_directory(path: str, option: str) -> None:
    """The directory an output goes to exists and this process can create files in it."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        parent = directory
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
        if parent and not os.path.isdir(parent):
            raise DataError(f"{option} {path}: {parent} is a file, not a directory; expected a path in a directory.")
        raise DataError(f"{option} {path}: the directory {directory} does not exist.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError(f"{option} {path}: cannot write in the directory {directory} (permission denied).")
    if len(os.fsencode(os.path.basename(path))) > 255:
        raise DataError(f"{option} {path}: the file name is longer than 255 bytes.")


def preflight(outputs: list[tuple[str, str | None]], inputs: list[tuple[str, str | None]], dirs: tuple = ()) -> None:
    """Refuse, before anything is read, a run whose outputs would destroy what it reads or writes.

    ``outputs`` and ``inputs`` are (role, path) pairs as the user wrote them (None and ``-``
    are skipped; an input may be ``PATH:COLUMN`` or a glob). Two names are the same file when
    their real paths match (symlinks, ``./a`` and ``a``) or, for existing files, their device
    and inode do (hard links); an input inside an output directory, or an output inside an
    input directory, collides too. Character devices (``/dev/null``) collide with nothing.
    Every local output that is not one of ``dirs`` (the Dask engine's per-sample directory)
    must be a path in an existing, writable directory.
    """
    outs = [(role, path) for role, path in outputs if path not in (None, "-")]
    for role, path in outs:
        if role not in dirs and not _is_uri(path):
            st = target_stat(path, role)
            if fd_alias(path) is None and (st is None or not _is_special(st)):  # written in place: no directory needed
                check_directory(path, role)
    seen: list[tuple[str, str, tuple]] = []
    for role, path in outs:
        key = _identity(path)
        if key is None:
            continue
        for other_role, other_path, other in seen:
            if _collide(key, other):
                raise UsageError(
                    f"{role} {path} and {other_role} {other_path} name the same file; each output needs its own path."
                )
        seen.append((role, path, key))
    for in_role, text in inputs:
        for candidate in _input_candidates(text):
            key = _identity(candidate)
            if key is None:
                continue
            for role, path, out in seen:
                if _collide(key, out):
                    raise UsageError(
                        f"{role} {path} is the input {in_role} {text}; an output never overwrites what the run "
                        "reads. Write the output to another path."
                    )
                if _inside(key, out) or _inside(out, key):
                    inner, outer = (f"the input {in_role} {text}", f"{role} {path}")
                    if _inside(out, key):
                        inner, outer = (f"{role} {path}", f"the input {in_role} {text}")
                    raise UsageError(
                        f"{inner} is inside {outer}; an output must not mix with what the run reads. "
                        "Write the output outside the input's directory."
                    )


def _is_uri(path: str) -> bool:
    from lossctl.io.remote import is_uri

    return is_uri(path)


def _identity(path: str):
    """(real path, (device, inode) or None) of a local path, ('uri', text) of a URI; None for a device."""
    if _is_uri(path):
        return ("uri", path.rstrip("/"), None)
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return ("path", real, None)
    if stat.S_ISCHR(st.st_mode):
        return None
    return ("path", real, (st.st_dev, st.st_ino))


def _collide(a, b) -> bool:
    return a[0] == b[0] and (a[1] == b[1] or (a[2] is not None and a[2] == b[2]))


def _inside(a, b) -> bool:
    """Is ``a`` below the directory ``b``?"""
    sep = "/" if b[0] == "uri" else os.sep
    return a[0] == b[0] and a[1].startswith(b[1].rstrip(sep) + sep)


def _input_candidates(text: str | None) -> list[str]:
    """The paths an input text may name: itself, its PATH of PATH:COLUMN, a glob's matches."""
    from lossctl.io import STDIN_TOKEN

    if text is None or not isinstance(text, str) or text == "-" or text.startswith(("-:", STDIN_TOKEN)):
        return []
    names = [text]
    head, sep, _ = text.rpartition(":")
    if sep and head and not head.endswith(":/") and not (_is_uri(text) and not _is_uri(head)):
        names.append(head)
    out = []
    for name in names:
        out.append(name)
        if not _is_uri(name) and any(c in name for c in "*?["):
            import glob

            out.extend(glob.glob(name, recursive=True)[:10000])
    return out
