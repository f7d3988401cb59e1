"""The one rule for names that become file or folder names (sample names from tables, lists, CSVs and split
lists; run names from flags): a name stays inside its folder.

A name is refused when it is empty, ``.`` or ``..``, holds a path separator (``/``, ``\\``, ``os.sep``,
``os.altsep``), a NUL or a line break, or is an absolute path. Everything else is kept as it is: dots
(``dia0_utt1.mp4``), spaces, unicode and leading zeros are fine.
"""

import ntpath
import os

from common.errors import DataError

_SEPARATORS = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
_FORBIDDEN = {"\0": "a NUL character", "\n": "a line break", "\r": "a line break"}

FIX = "a name is one file name: no '/', '\\', '..' or absolute path (rename the sample, or the file it stands for)"


def name_problem(name):
    """Why ``name`` cannot be a file name inside its folder (a short phrase), or None when it can."""
    if isinstance(name, int) and not isinstance(name, bool):  # a number in a JSON list names its file as text
        name = str(name)
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if name == "":
        return "is empty"
    if name in (".", ".."):
        return f"is '{name}'"
    if os.path.isabs(name) or ntpath.isabs(name):
        return "is an absolute path"
    for ch, what in _FORBIDDEN.items():
        if ch in name:
            return f"holds {what}"
    if ".." in name.replace("\\", "/").split("/"):
        return "climbs out of its folder with '..'"
    for sep in _SEPARATORS:
        if sep in name:
            return f"holds a path separator '{sep}'"
    return None


def check_name(name, what="name"):
    """Return ``name`` when it may be a file name in its folder; else raise a one-line DataError naming
    ``what`` (e.g. ``--run_name``) and the value."""
    problem = name_problem(name)
    if problem:
        raise DataError(f"{what} {name!r} {problem}; {FIX}")
    return name


def check_names(names, source, row_offset=None):
    """Return ``names`` when every one passes :func:`check_name`; else raise a one-line DataError naming
    ``source``, the first offending entry and how many there are. ``row_offset``: add it to a 0-based index to
    give a row number of a CSV (2: the header is row 1); without it, the entry is named by its 0-based index."""
    bad = [(i, n, p) for i, n in enumerate(names) for p in [name_problem(n)] if p]
    if bad:
        i, name, problem = bad[0]
        where = f"row {i + row_offset}" if row_offset is not None else f"entry #{i}"
        more = f" ({len(bad)} bad names in all)" if len(bad) > 1 else ""
        raise DataError(f"{source}, {where}: name {name!r} {problem}{more}; {FIX}")
    return names
