"""User files: prompt lists in, output folders out. Every failure is a typed, one-line error.

Output folders (``output_folder``): a command writes into one ``--out`` folder, holding a lock
file (``.hypernoise.lock``) for as long as it runs, and records in ``.hypernoise-manifest.json``
the top-level entries it wrote there. ``overwrite`` removes those entries and nothing else.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import itertools
import json
import re
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

from hypernoise.devices import check_launch_env
from hypernoise.errors import HypernoiseError, InputFileError, OutputExistsError

#: the lock file of the run writing into a folder: JSON {pid, host, command, started}
LOCK_FILE = ".hypernoise.lock"
#: the top-level entries hypernoise wrote into a folder: JSON {"entries": [...], ...}
MANIFEST_FILE = ".hypernoise-manifest.json"
#: how many foreign entries an error names
_NAMED = 3

#: lock files this process holds (links resolved): a lock naming this pid that is not here is stale
_HELD: set = set()
#: the largest pid a lock may name (a C int); a larger one is no process
MAX_PID = 2**31 - 1
#: what every command may leave at the top of its folder while it writes (staged folders, files)
_TEMPORARY = ".tmp-*"

#: how deeply a JSON value the library reads may nest, and how many characters one number may have:
#: beyond them Python's parser fails with RecursionError or "Exceeds the limit (4300 digits)"
MAX_JSON_DEPTH = 100
MAX_JSON_NUMBER = 100
#: the largest prompt file read (the paper's 70k prompts are about 7 MB of text)
MAX_PROMPT_FILE_MB = 256
#: the longest prompt, in characters (text encoders read 77 to 300 tokens of it)
MAX_PROMPT_CHARS = 10_000
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def load_json(text: str):
    """``json.loads`` bounded in depth and number size: a ``ValueError`` saying which (the message
    reads after the file's name: "nests 200000 levels deep (at most 100)")."""
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nests {depth} levels deep (at most {MAX_JSON_DEPTH})")
    return json.loads(text, parse_int=_bounded(int), parse_float=_bounded(float))


def _json_depth(text: str) -> int:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot nest deeper: not worth a scan
    brackets = re.findall(r"[\[\]{}]", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def _bounded(kind):
    def parse(number: str):
        if len(number) > MAX_JSON_NUMBER:
            raise ValueError(f"holds a number of {len(number)} characters (at most {MAX_JSON_NUMBER})")
        return kind(number)

    return parse


def json_problem(error: ValueError) -> str:
    """What is wrong with a JSON text, short: the parser's own words, or ``load_json``'s."""
    return getattr(error, "msg", None) or str(error)[:120]


def short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a user's value quoted in a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]} ({len(str(value))} characters)"


def read_prompts(path) -> list[str]:
    """Prompts from a UTF-8 file: one per line, or JSONL objects with a ``prompt`` field.

    Blank lines are skipped; a file with no prompt, an unreadable file, or a JSONL line with no
    (or an empty) ``prompt`` is an ``InputFileError`` naming the file and line.
    """
    return [r["prompt"] for r in read_prompt_records(path)]


def read_prompt_records(path) -> list[dict]:
    """Like ``read_prompts`` but keeps each JSONL object whole (GenEval metadata: tag, include...);
    plain-text lines become ``{"prompt": line}``.

    The file may be a pipe: ``/dev/stdin`` or a named pipe (FIFO) is read once, to its end.
    A ``.json`` file holds one JSON value: an object of prompts (its values), a list of prompts,
    or a list of objects with ``prompt``. A UTF-8 byte order mark is dropped. The file is read up
    to ``MAX_PROMPT_FILE_MB`` (a device that never ends, ``/dev/zero``, is refused at once: it is
    not text), each prompt up to ``MAX_PROMPT_CHARS`` characters.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"prompt file {path} does not exist; pass a text file with one prompt per line")
    if path.is_dir():
        raise InputFileError(f"prompt file {path} is a folder; pass a text file with one prompt per line")
    text = read_text(path)
    if path.suffix.lower() == ".json":
        records = _json_records(text, path)
    else:
        records = [_parse_line(line, path, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not records:
        raise InputFileError(f"prompt file {path} holds no prompt; write one prompt per line")
    return records


def read_text(path: Path, what: str = "prompt file", limit_mb: Optional[int] = None) -> str:
    """The UTF-8 text of a file the user gave (a byte order mark dropped), read in pieces up to
    ``limit_mb``; a larger file, a NUL byte (not text: a binary file, ``/dev/zero``), bytes that
    are not UTF-8 or a failed read is an ``InputFileError`` naming the file."""
    limit_mb = MAX_PROMPT_FILE_MB if limit_mb is None else limit_mb
    chunks, size, limit = [], 0, limit_mb << 20
    try:
        with open(path, "rb") as f:
            while size <= limit and (chunk := f.read(1 << 20)):
                if b"\0" in chunk:
                    raise InputFileError(f"{what} {path} holds a NUL byte (byte {size + chunk.index(0)}): it is not "
                                         f"text; pass a UTF-8 text file, one prompt per line")
                chunks.append(chunk)
                size += len(chunk)
    except OSError as e:
        if isinstance(e, HypernoiseError):
            raise
        raise InputFileError(f"cannot read {what} {path}: {e.strerror}") from None
    if size > limit:
        raise InputFileError(f"{what} {path} is larger than {limit_mb} MiB: not a list of prompts; pass a smaller "
                             f"file")
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputFileError(f"{what} {path} is not UTF-8 (byte {e.start}); re-save it as UTF-8") from None


def _checked_prompt(record: dict, where: str) -> dict:
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputFileError(f"{where}: no non-empty \"prompt\" field; give each JSONL line a prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputFileError(f"{where}: a prompt of {len(prompt)} characters (at most {MAX_PROMPT_CHARS}); one "
                             f"prompt per line")
    return {**record, "prompt": prompt.strip()}


def _parse_line(line: str, path: Path, number: int) -> dict:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return _checked_prompt({"prompt": stripped}, f"{path}:{number}")
    try:
        record = load_json(stripped)
    except ValueError as e:
        raise InputFileError(f"{path}:{number}: malformed JSON ({json_problem(e)}); one JSON object per line") from None
    return _checked_prompt(record if isinstance(record, dict) else {}, f"{path}:{number}")


def _json_records(text: str, path: Path) -> list[dict]:
    """The records of a ``.json`` prompt file (``read_prompt_records``); blank prompts skipped."""
    try:
        data = load_json(text)
    except ValueError as e:
        raise InputFileError(f"prompt file {path} is not readable JSON ({json_problem(e)}); pass an object or a list "
                             f"of prompts") from None
    items = list(data.values()) if isinstance(data, dict) else data if isinstance(data, list) else None
    records = [item if isinstance(item, dict) else {"prompt": item} for item in items or []]
    if not records or not all(isinstance(r.get("prompt"), str) for r in records):
        raise InputFileError(f"prompt file {path} is not an object or list of prompts (strings, or objects with "
                             f"a \"prompt\" string)")
    return [_checked_prompt(r, f"{path}, item {i}") for i, r in enumerate(records, 1) if r["prompt"].strip()]


# ---------------------------------------------------------------------------------------------
# output folders

Inputs = Union[Mapping[str, object], Sequence[object], None]


def prepare_output(path, overwrite: bool = False, resume: bool = False, inputs: Inputs = None) -> Path:
    """Create ``path`` for a new run, refusing to clobber an existing one (``output_folder``'s
    checks, with its lock taken and released at once).

    Prefer ``output_folder``: it holds the lock while the run writes and records what it wrote,
    so that a later ``overwrite`` can remove it. What is written after this returns is not in the
    folder's manifest, so a later ``overwrite`` refuses to remove it.
    """
    with output_folder(path, overwrite=overwrite, resume=resume, inputs=inputs) as out:
        pass
    out.mkdir(parents=True, exist_ok=True)  # kept for the caller, though nothing was written yet
    return out


@contextlib.contextmanager
def output_folder(path, *, overwrite: bool = False, resume: Optional[bool] = None, inputs: Inputs = None,
                  command: str = "", writes: Sequence[str] = (), distributed: bool = False) -> Iterator[Path]:
    """The output folder ``path`` of one run, locked for the run and its manifest kept.

    - ``path`` must not be ``/``, the home folder, the current folder or a parent of it (the
      current folder may be an empty folder, or a run's folder with ``resume``), nor an existing
      file, and must be writable: else a one-line ``OutputExistsError`` / ``InputFileError``.
    - One run per folder: ``.hypernoise.lock`` (created exclusively, JSON {pid, host, command,
      started}) is held until the block exits. A folder locked by a live process, or by another
      host, is an ``OutputExistsError`` naming the holder; a lock left by a dead process on this
      host is taken over.
    - ``resume``: True continues a run, False starts one of a command that can resume (the refusal
      below then names `resume`), None (default) for commands that cannot.
    - An existing folder holding anything is refused unless ``resume`` (the run continues there;
      nothing is removed) or ``overwrite``. ``overwrite`` removes the top-level entries listed in
      ``.hypernoise-manifest.json`` and nothing else: it refuses, removing nothing, when the folder
      holds an entry hypernoise did not write (or has no manifest), or when an input of the command
      (``inputs``: ``{field: path}`` or paths: prompt file, adapter, checkpoint, weights) lies
      inside it.
    - On exit (normal, error or interrupt) the manifest is rewritten atomically (when it changes):
      its entries present, plus those the block created. A run killed outright leaves its lock,
      which records what the folder held before the run wrote; the run that takes the stale lock
      over adds what the killed one created (entries not there before, changed since) to the
      manifest.
    - ``writes``: glob patterns of the top-level names the command writes (``"adapter"``,
      ``"*.png"``). Where given, only entries matching them (or ``.tmp-*``) count as the run's,
      at its end or when a killed run's entries are adopted: a file a user puts in the folder
      while the run lives, or after it was killed, stays theirs. With ``resume``, such an entry
      that is a symbolic link is refused (the run would write through it, outside the folder).

    ``distributed``: the command may run as one process of a launched multi-process run; in a
    process other than the main one (``WORLD_SIZE`` > 1 and ``RANK`` > 0, checked by
    ``devices.check_launch_env``) the folder is then only created: the main process checks, locks
    and records. Other commands check the folder in every process.
    """
    path = Path(path)
    if distributed and _launched_helper():
        _mkdir(path)
        yield path
        return
    will_delete = overwrite and not resume
    _check_place(path, will_delete, resume)
    if resume:
        _check_links(path, writes)
    created = not path.exists()
    _mkdir(path)
    lock, record, stale = _acquire(path, command, writes)
    now = None
    try:
        manifest = _read_manifest(path)
        present = _entries(path)
        recorded = set(manifest["entries"]) if manifest is not None else set()
        entries = (recorded | _adopt(path, present, stale)) & present
        if entries - recorded:  # what a killed run wrote is the library's, whatever this run does next
            _write_manifest(path, entries, (stale or {}).get("command") or command)
            manifest, recorded = {"entries": sorted(entries)}, set(entries)
        if present and not resume:
            if not overwrite:
                can_resume = "`resume` latest to continue the run, " if resume is not None else ""
                raise OutputExistsError(f"output folder {path} already holds results ({_names(present)}); pass "
                                        f"`overwrite` to replace them, {can_resume}or another `out`")
            _check_inputs(path, inputs)
            _check_foreign(path, present, entries, manifest is not None)
            for name in sorted(entries):
                _remove(path / name)
            entries = set()
            present = _entries(path)
        # what is here now is not this run's: a run killed from here on is told apart by the lock
        _rewrite_lock(lock, {**record, "before": sorted(present), "since": time.time()})
        try:
            yield path
        finally:
            with contextlib.suppress(HypernoiseError):  # an error of the run itself comes first
                now = _entries(path)
                final = (entries | _claimed(now - present, writes)) & now
                if manifest is None and final or manifest is not None and final != recorded:
                    _write_manifest(path, final, command)
    finally:
        _release(lock, record["token"])
        if created and now is not None and not now:  # a run that failed before writing leaves no folder
            with contextlib.suppress(OSError):
                path.rmdir()


def _launched_helper() -> bool:
    return check_launch_env() > 1 and int(os.environ.get("RANK", "0").strip()) > 0


def _claimed(names: set, writes: Sequence[str]) -> set:
    """Of ``names``, those a command that ``writes`` these patterns may have written (all of them
    where it names none)."""
    if not writes:
        return set(names)
    patterns = [*writes, _TEMPORARY]
    return {name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def unrecorded(path, writes: Sequence[str]) -> list[str]:
    """Top-level entries of ``path`` matching ``writes`` (glob patterns) that its manifest does not
    list: files of someone else that a command writing those names would overwrite."""
    path = Path(path)
    manifest = _read_manifest(path) if path.is_dir() else None
    recorded = set(manifest["entries"]) if manifest else set()
    names = _claimed(_entries(path), writes) if path.is_dir() else set()
    return sorted(n for n in names - recorded if not fnmatch.fnmatchcase(n, _TEMPORARY))


def _check_links(path: Path, writes: Sequence[str]) -> None:
    """Refuse to continue a run in ``path`` when an entry it writes into is a symbolic link."""
    if not path.is_dir():
        return
    links = sorted(n for n in _claimed(_entries(path), writes) if (path / n).is_symlink())
    if links:
        target = os.readlink(path / links[0])
        raise OutputExistsError(f"{path / links[0]} is a symbolic link (to {target}): the run would write through it, "
                                f"outside {path}; nothing was written; replace the link with a folder of its own or "
                                f"pass another `out`")


def _is_ours(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in (LOCK_FILE, MANIFEST_FILE))


def _entries(path: Path) -> set:
    """Top-level names in ``path``, less the lock and the manifest."""
    try:
        return {name for name in os.listdir(path) if not _is_ours(name)}
    except OSError as e:
        raise InputFileError(f"cannot read output folder {path} ({e.strerror}); pass a readable `out`") from None


def _names(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_NAMED])
    return shown + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_place(path: Path, will_delete: bool, resume: bool) -> None:
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output {path} exists and is not a folder; pass another `out`")
    real, cwd = _resolved(path), _resolved(Path.cwd())
    if real == Path(real.anchor):
        raise OutputExistsError(f"`out` {path} is the root folder; pass a folder of its own, e.g. `out` runs/NAME")
    try:
        home = _resolved(Path.home())
    except (KeyError, RuntimeError):
        home = None
    if real == home:
        raise OutputExistsError(f"`out` {path} is the home folder; pass a folder of its own, e.g. `out` runs/NAME")
    if real != cwd and real in cwd.parents:
        raise OutputExistsError(f"`out` {path} is a parent of the current folder; nothing was deleted; pass a "
                                f"folder of its own, e.g. `out` runs/NAME")
    if real == cwd and (will_delete or (not resume and _entries(path))):
        raise OutputExistsError(f"`out` {path} is the current folder and holds files; nothing was deleted; pass a "
                                f"folder of its own, e.g. `out` runs/NAME")


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputFileError(f"cannot write to output folder {path} ({e.strerror}); pass a writable `out`") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputFileError(f"cannot write to output folder {path} (permission denied); pass a writable `out`")


def _input_paths(inputs: Inputs):
    if not inputs:
        return []
    items = inputs.items() if isinstance(inputs, Mapping) else ((None, v) for v in inputs)
    out = []
    for field, value in items:
        values = value if isinstance(value, (list, tuple, set)) else [value]
        out += [(field, v) for v in values if v not in (None, "")]
    return out


def _check_inputs(path: Path, inputs: Inputs) -> None:
    """Refuse ``overwrite`` of a folder an input lies in (as given, or with links resolved)."""
    real, plain = _resolved(path), Path(os.path.abspath(path))
    for field, value in _input_paths(inputs):
        p = Path(str(value))
        if not p.exists() and not p.is_symlink():
            continue  # a Hub id or a name, not a local path
        if _within(_resolved(p), real) or _within(Path(os.path.abspath(p)), plain):
            what = f"{p} (`{field}`)" if field else f"input {p}"
            raise OutputExistsError(f"{what} lies inside the `out` folder {path}, which `overwrite` would clear; "
                                    f"nothing was deleted; move it out or pass another `out`")


def _check_foreign(path: Path, present: set, entries: set, has_manifest: bool) -> None:
    foreign = present - entries
    if not foreign:
        return
    if not has_manifest:
        raise OutputExistsError(f"output folder {path} has no {MANIFEST_FILE} (hypernoise writes one), so "
                                f"`overwrite` cannot tell its results from other files ({_names(foreign)}); nothing "
                                f"was deleted; move them or pass another `out`")
    raise OutputExistsError(f"output folder {path} holds files hypernoise did not write ({_names(foreign)}); "
                            f"`overwrite` removes only its own, so nothing was deleted; move them or pass another "
                            f"`out`")


def _remove(entry: Path) -> None:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputFileError(f"cannot remove {entry} ({e.strerror}); remove it or pass another `out`") from None


def _read_manifest(path: Path) -> Optional[dict]:
    try:
        data = load_json((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return None
    data["entries"] = [n for n in data["entries"] if _plain_name(n)]
    return data


def _plain_name(name) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and os.sep not in name
            and "\0" not in name and not _is_ours(name))


def _adopt(path: Path, present: set, stale: Optional[dict]) -> set:
    """What a run that ended without writing the manifest (killed) created, from its stale lock:
    the entries not there when it started writing, changed since."""
    if not stale or not isinstance(stale.get("before"), list):
        return set()  # no stale lock, or its run was killed before it wrote anything
    before, since = set(stale["before"]), stale.get("since")
    writes = stale.get("writes")
    writes = [w for w in writes if isinstance(w, str)] if isinstance(writes, list) else []
    adopted = set()
    for name in _claimed(present - before, writes):
        try:
            changed = os.lstat(path / name).st_mtime
        except OSError:
            continue
        if not isinstance(since, (int, float)) or changed >= since - 2:
            adopted.add(name)
    return adopted


def _write_atomic(target: Path, text: str) -> None:
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputFileError(f"cannot write to output folder {target.parent} ({e.strerror}); pass a writable "
                             f"`out`") from None


def _write_manifest(path: Path, entries: set, command: str) -> None:
    data = {"written_by": "hypernoise", "entries": sorted(entries), "command": command or None,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(path / MANIFEST_FILE, json.dumps(data, indent=1) + "\n")


# -- the lock -------------------------------------------------------------------------------------

def _acquire(path: Path, command: str, writes: Sequence[str] = ()) -> tuple:
    """Create ``path/.hypernoise.lock`` exclusively, taking over a stale one, else refuse:
    (lock path, its record, the stale lock's record taken over or None)."""
    lock = path / LOCK_FILE
    key = _key(lock)
    if key in _HELD:
        raise OutputExistsError(f"output folder {path} is already in use by this process; pass another `out`")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or "hypernoise",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": f"{os.getpid()}-{time.time_ns()}"}
    identity = _process_identity(os.getpid())
    if identity is not None:
        record["process"] = identity
    if writes:
        record["writes"] = list(writes)
    stale = None
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder, raw = _read_lock(lock)
            if not _stale(holder, key):
                raise OutputExistsError(_held_message(path, lock, holder)) from None
            if _take_over(lock, raw):
                stale = holder
            continue
        except OSError as e:
            raise InputFileError(f"cannot write to output folder {path} ({e.strerror}); pass a writable `out`") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        _HELD.add(key)
        return lock, record, stale
    raise OutputExistsError(f"output folder {path} is contended by other runs ({LOCK_FILE}); try again or pass "
                            f"another `out`")


def _read_lock(lock: Path):
    """The holder's record (None if unreadable after a moment: a creator killed before writing)
    and the raw bytes, or (None, None) when the lock is gone."""
    raw = b""
    for _ in range(10):
        try:
            raw = lock.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError:
            raw = b""
        try:
            holder = load_json(raw.decode("utf-8"))
            if isinstance(holder, dict):
                return holder, raw
        except ValueError:  # UnicodeDecodeError, JSON's errors and load_json's bounds
            pass
        time.sleep(0.1)  # being written by its creator
    return None, raw


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    return True


def _stale(holder: Optional[dict], key: str) -> bool:
    if holder is None:
        return True  # gone, or never written (its creator died between creating and writing it)
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: cannot tell whether it lives
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= MAX_PID:
        return True  # no process has such a pid
    if pid == os.getpid():
        return key not in _HELD  # this pid, but not this process's lock: a dead run's pid reused
    if not _alive(pid):
        return True
    recorded, now = holder.get("process"), _process_identity(pid)
    return recorded is not None and now is not None and recorded != now  # the pid reused by another process


def _process_identity(pid: int) -> Optional[str]:
    """``boot id:start time`` of process ``pid`` (Linux ``/proc``), which tells a live run from an
    unrelated process that reuses its pid after a crash or a reboot; None where ``/proc`` has no
    such record (other systems: a live pid then counts as the holder)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _take_over(lock: Path, raw: Optional[bytes]) -> bool:
    """Remove a stale lock, unless another process replaced it in the meantime: whether this
    process removed it."""
    if raw is None:
        return False  # already gone
    aside = lock.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False  # another process took it over first
    except OSError as e:
        raise InputFileError(f"cannot write to output folder {lock.parent} ({e.strerror}); pass a writable "
                             f"`out`") from None
    try:
        moved = aside.read_bytes()
    except OSError:
        moved = raw
    if moved != raw:  # a live lock created after we read the stale one: put it back
        with contextlib.suppress(OSError):
            os.link(aside, lock)
    with contextlib.suppress(OSError):
        aside.unlink()
    return moved == raw


def _rewrite_lock(lock: Path, record: dict) -> None:
    _write_atomic(lock, json.dumps(record) + "\n")


def _held_message(path: Path, lock: Path, holder: Optional[dict]) -> str:
    h = {k: str(v)[:80] for k, v in (holder or {}).items()}  # whatever a lock file holds: a short line
    who = (f"pid {h.get('pid')} on host {h.get('host')}, {h.get('command') or 'hypernoise'}"
           + (f", started {h['started']}" if h.get("started") else ""))
    if (holder or {}).get("host") == socket.gethostname():
        return (f"output folder {path} is in use by another run ({who}); wait for it to end, stop it, or pass "
                f"another `out`")
    return (f"output folder {path} is in use by a run on another machine ({who}); if that run is gone, delete "
            f"{lock}; else pass another `out`")


def _key(lock: Path) -> str:
    return os.path.join(os.path.realpath(lock.parent), lock.name)


def _release(lock: Path, token: str) -> None:
    _HELD.discard(_key(lock))
    holder, _ = _read_lock(lock) if lock.exists() else (None, None)
    if holder is not None and holder.get("token") == token:
        with contextlib.suppress(OSError):
            lock.unlink()


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON, creating the parent folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1, default=str) + "\n")


def find_prompts(prompts: Optional[list], prompts_file: Optional[str]) -> Optional[list[str]]:
    """Prompts from ``--prompt`` values and/or ``--prompts FILE``; None when neither is given."""
    out = list(prompts or [])
    if any(not p.strip() for p in out):
        raise InputFileError("an empty `prompt` was given; pass non-empty text")
    if prompts_file:
        out += read_prompts(prompts_file)
    return out or None


def save_torch(obj, path) -> None:
    """``torch.save`` of ``obj`` to ``path``, serialised in memory and written by Python, so that a
    failed write (a full disk, a file-size limit) is the ``OSError`` it is: torch's own writer
    raises ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def replace_folder(new, final) -> None:
    """Put the complete folder ``new`` in ``final``'s place (``new`` beside it, on the same file
    system), never deleting first and never deleting what is not replaced: entries of the old
    ``final`` that ``new`` lacks (a user's notes, their own README.md) are moved into ``new``
    first. Only the files written anew replace their old versions."""
    new, final = Path(new), Path(final)
    if not final.is_dir() or final.is_symlink():
        os.replace(new, final)
        return
    for name in os.listdir(final):
        if not os.path.lexists(new / name):
            os.replace(final / name, new / name)
    old = final.with_name(f".tmp-old-{final.name}-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def save_tensors(tensors: dict, path, metadata: Optional[dict] = None) -> None:
    """``safetensors.torch.save_file``, with a failed write (a full disk, a file-size limit)
    raised as the ``OSError`` it is (``write_errors_as_oserror``) so that callers and the CLI
    treat it as one."""
    from safetensors.torch import save_file

    with write_errors_as_oserror(path):
        save_file(tensors, str(path), metadata=metadata)


@contextlib.contextmanager
def write_errors_as_oserror(path) -> Iterator[None]:
    """Inside the block, safetensors' own error for a failed write (``... (os error 27)``; also
    raised by transformers' ``save_pretrained``) is the ``OSError`` it is, naming ``path``."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:
        found = _OS_ERROR.search(str(e))
        if found is None:
            raise
        number = int(found.group(1))
        raise OSError(number, os.strerror(number), str(path)) from None
