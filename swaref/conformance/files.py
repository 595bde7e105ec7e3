"""Reading untrusted files safely: names, paths, sizes and JSON nesting.

Everything the runner reads (a suite, a results folder, a port's output) may
have been written by someone else.  Names are a strict pattern, paths stay
inside their folder (symlinks followed), only regular files of a bounded size
are read, and JSON is parsed only after its nesting depth is known to be small
(``json.loads`` recurses once per level, so a deeply nested document would
otherwise end in RecursionError).
"""
import json
import os
import re
import stat

import numpy as np

from ..errors import SwarefError

#: A case id, and a file name without its suffix: letters, digits, '.', '_', '-'; no leading dot.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$"
_NAME = re.compile(NAME_PATTERN)
#: JSON documents of the format (manifest, .err.json, report) never nest deeper than this.
MAX_JSON_DEPTH = 16

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class FileFormatError(SwarefError):
    """A file that cannot be read as what it claims to be (kind "format")."""

    def __init__(self, message):
        super().__init__("format", message)


def is_safe_name(name):
    """True for a bare file name or case id of the strict pattern (no separator, no '..', not absolute)."""
    # fullmatch: with match() or search(), "$" would also accept a trailing newline.
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name


def path_inside(folder, name):
    """The real path of ``folder/name`` if ``name`` is safe and it resolves inside ``folder``, else None."""
    if not is_safe_name(name):
        return None
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if path == root or os.path.commonpath([root, path]) != root:
        return None                      # a symlink that leads out of the folder
    return path


def read_regular(path, limit, what):
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes (FileFormatError otherwise).

    O_NONBLOCK keeps a FIFO from blocking the open; fstat on the open file checks
    what is actually read (a device such as /dev/zero has no end).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise FileFormatError(f"cannot read {what}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileFormatError(f"{what} is not a regular file")
        if st.st_size > limit:
            raise FileFormatError(f"{what} has {st.st_size} bytes, more than the {limit} it may have")
        data = f.read(limit + 1)
    if len(data) > limit:                # it grew while we read it
        raise FileFormatError(f"{what} has more than the {limit} bytes it may have")
    return data


def json_depth(data):
    """The deepest nesting of arrays and objects in JSON bytes, found without recursion.

    Strings are cut out first (brackets inside them do not nest), then every
    opening bracket counts +1 and every closing one -1.
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = best = 0
    for i in range(0, len(brackets), 1 << 20):
        a = np.frombuffer(brackets, dtype=np.uint8, count=min(1 << 20, len(brackets) - i), offset=i)
        run = np.cumsum(np.where((a == ord("[")) | (a == ord("{")), 1, -1), dtype=np.int64) + depth
        best = max(best, int(run.max()))
        depth = int(run[-1])
    return best


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def load_json(data, what, max_depth=MAX_JSON_DEPTH, error=FileFormatError):
    """Parse UTF-8 JSON bytes strictly: nesting <= max_depth, no duplicate keys, no NaN/Infinity."""
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{what}: JSON nested {depth} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{what} is not valid UTF-8 JSON ({e})") from None
