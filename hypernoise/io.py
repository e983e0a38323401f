"""User files: prompt lists in, output folders out. Every failure is a typed, one-line error.

Output folders (``output_folder``): a command writes into one ``--out`` folder, holding a lock
file (``.hypernoise.lock``) for as long as it runs, and records in ``.hypernoise-manifest.json``
the top-level entries it wrote there. ``overwrite`` removes those entries and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import re
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

from hypernoise.errors import HypernoiseError, InputFileError, OutputExistsError

#: the lock file of the run writing into a folder: JSON {pid, host, command, started}
LOCK_FILE = ".hypernoise.lock"
#: the top-level entries hypernoise wrote into a folder: JSON {"entries": [...], ...}
MANIFEST_FILE = ".hypernoise-manifest.json"
#: how many foreign entries an error names
_NAMED = 3

#: lock files this process holds (links resolved): a lock naming this pid that is not here is stale
_HELD: set = set()


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
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"prompt file {path} does not exist; pass a text file with one prompt per line")
    if path.is_dir():
        raise InputFileError(f"prompt file {path} is a folder; pass a text file with one prompt per line")
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(f"prompt file {path} is not UTF-8 (byte {e.start}); re-save it as UTF-8") from None
    except OSError as e:
        raise InputFileError(f"cannot read prompt file {path}: {e.strerror}") from None
    records = [_parse_line(line, path, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not records:
        raise InputFileError(f"prompt file {path} holds no prompt; write one prompt per line")
    return records


def _parse_line(line: str, path: Path, number: int) -> dict:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return {"prompt": stripped}
    try:
        record = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}:{number}: malformed JSON ({e.msg}); one JSON object per line") from None
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputFileError(f"{path}:{number}: no non-empty \"prompt\" field; give each JSONL line a prompt")
    return {**record, "prompt": prompt.strip()}


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
                  command: str = "") -> Iterator[Path]:
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

    In a process other than the main one of a launched multi-process run (``WORLD_SIZE`` > 1 and
    ``RANK`` > 0) the folder is only created: the main process checks, locks and records.
    """
    path = Path(path)
    if _launched_helper():
        _mkdir(path)
        yield path
        return
    will_delete = overwrite and not resume
    _check_place(path, will_delete, resume)
    created = not path.exists()
    _mkdir(path)
    lock, record, stale = _acquire(path, command)
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
                final = (entries | (now - present)) & now
                if manifest is None and final or manifest is not None and final != recorded:
                    _write_manifest(path, final, command)
    finally:
        _release(lock, record["token"])
        if created and now is not None and not now:  # a run that failed before writing leaves no folder
            with contextlib.suppress(OSError):
                path.rmdir()


def _launched_helper() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0
    except ValueError:
        return False


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
        data = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
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
    adopted = set()
    for name in present - before:
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

def _acquire(path: Path, command: str) -> tuple:
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
            holder = json.loads(raw.decode("utf-8"))
            if isinstance(holder, dict):
                return holder, raw
        except (UnicodeDecodeError, ValueError):
            pass
        time.sleep(0.1)  # being written by its creator
    return None, raw


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
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
    if not isinstance(pid, int) or pid <= 0:
        return True
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
    h = holder or {}
    who = (f"pid {h.get('pid')} on host {h.get('host')}, {h.get('command') or 'hypernoise'}"
           + (f", started {h['started']}" if h.get("started") else ""))
    if h.get("host") == socket.gethostname():
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


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def save_tensors(tensors: dict, path, metadata: Optional[dict] = None) -> None:
    """``safetensors.torch.save_file``, with a failed write (a full disk, a file-size limit)
    raised as the ``OSError`` it is (safetensors raises its own error type) so that callers and
    the CLI treat it as one."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        found = _OS_ERROR.search(str(e))
        if found is None:
            raise
        number = int(found.group(1))
        raise OSError(number, os.strerror(number), str(path)) from None
