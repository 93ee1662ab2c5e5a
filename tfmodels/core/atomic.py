"""Directories written so that a process killed at any moment (SIGKILL, power loss) leaves a loadable copy.

Every saved artefact here is a directory whose files only make sense together (config.json and its weights, a
SavedModel, a training backup's weights and metadata). `replacing_directory(path)` hands out an empty temporary
sibling of `path`; the caller writes the complete new copy there; then every file and folder of it is fsynced
and it takes the place of `path` by a rename. Until that rename `path` is the previous copy, untouched; after it,
the new one. A reader therefore never sees a half-written directory, nor new weights beside an old config.

Replacing an existing directory needs two names swapped at once. On Linux `renameat2(RENAME_EXCHANGE)` does that
atomically: at every instant `path` is the old or the new directory (TF Serving, which watches `export/<version>`
folders, never sees the version missing). Where it is not available (another OS, a file system without it) the
swap takes two renames, `path` -> `.<name>.previous` then the new copy -> `path`; a kill between them leaves
only the previous copy, under that backup name, which `readable_path` (the loaders) and `recover` (the next
writer) look for. Leftovers of killed writes (`.<name>.partial-<pid>-*` folders) are removed by the next write.
"""
import contextlib
import ctypes
import errno
import os
import shutil
import tempfile

from tfmodels.core.logging import logger

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_exchange_unavailable = []  # the reason, once renameat2 failed for a reason other than the paths themselves


def _hidden(path, suffix):
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.{suffix}")


def backup_path(path):
    """Where the two-rename swap keeps the previous copy of `path` while it moves the new one in."""
    return _hidden(path, "previous")


def readable_path(path):
    """`path`, or its previous copy when a two-rename swap was killed between its renames (read-only)."""
    if not os.path.exists(path) and os.path.isdir(backup_path(path)):
        return backup_path(path)
    return path


def recover(path):
    """Finish what a killed two-rename swap left: the previous copy goes back to `path`."""
    if not os.path.exists(path) and os.path.isdir(backup_path(path)):
        os.rename(backup_path(path), path)
        _fsync_directory(os.path.dirname(os.path.abspath(path)))


def write_text(path, text):
    """Write a text file atomically: a temporary file beside it, fsynced, renamed over it."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def remove_directory(path):
    """Delete a directory so that a kill midway leaves it whole or gone: it is renamed away first (a leftover
    that the next write to `path` removes), never seen half-deleted under its own name."""
    if not os.path.isdir(path):
        return
    doomed = tempfile.mkdtemp(prefix=os.path.basename(_hidden(path, f"partial-{os.getpid()}-")),
                              dir=os.path.dirname(os.path.abspath(path)))
    os.rename(path, os.path.join(doomed, "removed"))
    _fsync_directory(os.path.dirname(os.path.abspath(path)))
    shutil.rmtree(doomed)


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root):
    """Flush every file and folder under `root` to disk, deepest first, so the rename publishes durable data."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_directory(folder)


def _exchange(a, b):
    """Swap two existing paths atomically (Linux renameat2); False where the system cannot."""
    if _exchange_unavailable:
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        reason = "the C library has no renameat2"
    elif renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    else:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), a, None, b)
        reason = f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(code)}"
    _exchange_unavailable.append(reason)
    logger.warning(f"atomic directory swap unavailable ({reason}): directories are replaced by two renames, "
                   "the previous copy kept as .<name>.previous in between")
    return False


def _remove_leftovers(path):
    """Delete the temporary folders of killed writes to `path` (their process is gone), also those of a write
    nested in one (`..<name>.partial-<pid>-*.partial-*`: save_pretrained into the folder of an export)."""
    parent, name = os.path.split(os.path.abspath(path))
    prefix = f"{name.lstrip('.')}.partial-"
    for entry in os.listdir(parent):
        if not entry.startswith(".") or not entry.lstrip(".").startswith(prefix):
            continue
        pid = entry.lstrip(".")[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _carry_over(old, new, keep):
    """Hard-link (copy where links fail) the entries of `old` that `keep` accepts and `new` lacks into `new`."""
    for name in os.listdir(old):
        source, target = os.path.join(old, name), os.path.join(new, name)
        if os.path.lexists(target) or not keep(name):
            continue
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)


def _link_or_copy(source, target):
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


@contextlib.contextmanager
def replacing_directory(path, keep=None):
    """Yield an empty temporary folder beside `path`; when the block completes, it replaces `path` (see the
    module docstring). `keep(name)`: entries of the old `path` to carry into the new copy when it lacks them
    (e.g. tokenizer files beside a model's weights); by default nothing is carried over. An exception in the
    block leaves `path` as it was and removes the temporary folder."""
    path = os.path.realpath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    recover(path)
    _remove_leftovers(path)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-{os.getpid()}-", dir=parent)
    try:
        yield temporary
        if keep is not None and os.path.isdir(path):
            _carry_over(path, temporary, keep)
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp's folder is private; a saved one is not
        _fsync_tree(temporary)
        _publish(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # the new copy on failure, the old one after a swap


def _publish(temporary, path):
    if not os.path.exists(path):
        os.rename(temporary, path)
    elif not os.path.isdir(path) or os.path.islink(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    elif not _exchange(temporary, path):
        backup = backup_path(path)
        shutil.rmtree(backup, ignore_errors=True)  # a stale one: `path` itself is complete
        os.rename(path, backup)
        os.rename(temporary, path)
        _fsync_directory(os.path.dirname(path))
        shutil.rmtree(backup)
    _fsync_directory(os.path.dirname(path))


def _umask():
    """The process's umask, read without setting it (os.umask would change it for every thread meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration):
        return 0o022
