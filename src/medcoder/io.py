"""Atomic file writing and careful text reading.

Nothing we write is ever half-written: content goes to a temporary file in the
destination folder, is flushed and fsynced, then renamed over the target.
A directory (a bundle) is built in a temporary sibling and swapped in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from medcoder.errors import InputError

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some editors write first


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask_mode(mode: int) -> int:
    """``mode`` less the process umask: what ``open()``/``mkdir()`` would have given.

    ``mkstemp``/``mkdtemp`` create 0600 files and 0700 folders; without this a
    model saved on a shared server would be unreadable to the rest of the team.
    """
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it in at ``path``.

    If the body raises, the temporary directory is removed and whatever was
    at ``path`` before is untouched. An existing directory at ``path`` is
    replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # Writers such as safetensors create 0600 files, mkdtemp a 0700 folder:
        # give everything the modes an ordinary save would have.
        file_mode, dir_mode = _umask_mode(0o666), _umask_mode(0o777)
        for folder, _, files in os.walk(tmp):
            os.chmod(folder, dir_mode)
            for name in files:
                os.chmod(os.path.join(folder, name), file_mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.rmdir(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def link_or_copy_tree(source: str | Path, target: str | Path) -> None:
    """Copy the folder ``source`` to ``target`` (which must not exist), hard-linking files where the disk allows.

    Safe because medcoder never rewrites a file in place (every write is a new
    file renamed over the old), so linked copies cannot change under each other.
    """

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def recover_directory(path: str | Path, *, marker: str, clean: bool = True) -> None:
    """Clean up after an :func:`atomic_directory` swap that was killed part-way.

    If ``path`` is missing but a complete ``.NAME.*.old`` (one holding
    ``marker``) is there, the kill fell between the swap's two renames: the old
    directory is put back. With ``clean`` (writers, before they write),
    half-built ``.NAME.*.tmp`` siblings and other ``.old`` leftovers are
    deleted; readers pass ``clean=False``, since a save may be under way.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    if clean:
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    for old in sorted(path.parent.glob(f".{path.name}.*.old")):
        if not path.exists() and (old / marker).is_file():
            os.replace(old, path)
        elif clean:
            shutil.rmtree(old, ignore_errors=True)


def read_text_file(path: str | Path) -> str:
    """Read a whole UTF-8 text file (a leading BOM dropped); name the file, line and byte offset on bad bytes."""
    path = Path(path)
    _check_readable_file(path)
    data = path.read_bytes()
    bom = len(BOM) if data.startswith(BOM) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: bom + exc.start].count(b"\n") + 1
        raise InputError(not_utf8_message(data[bom:], exc, offset=bom), path=path, line=line) from None


def not_utf8_message(data: bytes, exc: UnicodeDecodeError, *, offset: int = 0) -> str:
    """What is wrong with ``data`` (whose first byte is at ``offset`` in its file), for every reader's error."""
    return f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {offset + exc.start})"


def iter_byte_lines(handle: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(line_number, offset, line)`` of a binary stream: 1-based, the file offset of the line's first
    byte, and its bytes with their ending. Lines end at ``\\n`` only, as JSON-lines and CSV define them; a
    leading BOM is dropped (line 1 then starts at offset 3). One line in memory at a time.
    """
    offset = 0
    for number, raw in enumerate(handle, start=1):
        start = offset
        offset += len(raw)
        if number == 1 and raw.startswith(BOM):
            raw, start = raw[len(BOM) :], len(BOM)
        yield number, start, raw


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("expected a file, found a directory", path=path)


def iter_text_lines(path: str | Path, *, keepends: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 file, 1-based, without the line ending (``\\n`` or ``\\r\\n``)
    unless ``keepends``.

    The file is streamed: memory stays at one line however large the file (a
    1.3 GB JSONL read whole and decoded peaked at 4 GB). Lines end at ``\\n``
    only, as JSON-lines and CSV define them. A leading BOM is dropped. Bad
    UTF-8 names the line and the byte's offset in the file.
    """
    path = Path(path)
    _check_readable_file(path)
    with path.open("rb") as handle:
        for number, offset, raw in iter_byte_lines(handle):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(not_utf8_message(raw, exc, offset=offset), path=path, line=number) from None
            yield number, line if keepends or not line.endswith("\n") else line.rstrip("\r\n")


def json_type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def iter_json_objects(lines: Iterable[tuple[int, str]], source: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parse JSON-lines: yield ``(line_number, object)``, skipping blank lines.

    A line that is not valid JSON, or not a JSON object, is an ``InputError``
    naming ``source`` and the line.
    """
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=source, line=number) from None
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, found {json_type_name(record)}", path=source, line=number)
        yield number, record


def read_json_file(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    text = read_text_file(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None
