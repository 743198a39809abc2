"""Make-like "up to date" checks of a run: a notebook whose inputs, code and outputs are unchanged is not re-run.

A numbered notebook declares in its metadata what it reads and writes, as templates over its own
parameters (``pacs_workbench.inputs`` and ``pacs_workbench.outputs``, e.g. ``"{dicom_dir}"``,
``"{cases_file}/.."``; a template naming an empty parameter is skipped). Before it executes, its
*stamp* is computed (:func:`notebook_stamp`): SHA-256 over the notebook's bytes, its parameter
values, the workbench's own code, the package versions and Python, the kernel, the
``PACS_WORKBENCH_*`` environment and the content of every declared input. After it succeeded, the
digest of its declared outputs and of its report files is recorded too. The next run into the
same report folder reuses the notebook (keeps its ``.ipynb`` and ``.html``, marks its record
``reused_from``) when the last record was ``ok``, the stamp is the same and the outputs are as
that run left them (:class:`StampBook`); anything else executes it. A notebook without the
declaration always executes.

``stamps.json`` in the report folder holds the records: digests, run ids and the notebooks' run
records only. Never a file listing, a source path or a parameter value: file names can carry
patient identifiers, and the key file's content reaches nothing but a combined digest.
:class:`FileHasher` memoizes each file's SHA-256 within one run by (path, size, mtime, inode),
so a folder that is one notebook's output and the next one's input is read once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import string
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pacs_workbench.core.files import sha256_file, write_json_atomic
from pacs_workbench.core.params import HOME_ENV, KEY_FILE_ENV, ParameterError, project_path
from pacs_workbench.runner.pages import NotebookRun, package_versions

#: The records of a report folder's last runs, beside ``run.json``.
STAMPS_FILE = "stamps.json"
#: Bump when what a stamp covers changes, so stamps of older runs never match.
STAMP_VERSION = 1
#: Notebook metadata (``metadata.pacs_workbench``) keys of the declaration.
INPUTS_KEY, OUTPUTS_KEY = "inputs", "outputs"
#: Parameters naming a source outside the file system (a PACS): when one is set the notebook always executes.
ALWAYS_RUN_KEY = "always_run_with"
ENV_PREFIX = "PACS_WORKBENCH_"
PACKAGE_DIR = Path(__file__).resolve().parent.parent


class FileHasher:
    """SHA-256 of files and folders, each file read at most once per run while it is unchanged.

    A file is known by (path, size, mtime_ns, inode): an atomic rewrite gives a new inode, an
    in-place one a new mtime or size, so a stale digest is never used. ``seconds`` is the time
    spent hashing and walking, reported with the run.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int, int, int], str] = {}
        self.files_read = 0
        self.bytes_read = 0
        self._hash_seconds = 0.0
        self._walk_seconds = 0.0

    @property
    def seconds(self) -> float:
        """Time spent reading files and walking folders (also files hashed outside :meth:`tree`)."""
        return self._hash_seconds + self._walk_seconds

    def file(self, path: Path, info: os.stat_result | None = None) -> str:
        """SHA-256 (hex) of one file's bytes."""
        info = info if info is not None else os.stat(path)
        key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
        digest = self._memo.get(key)
        if digest is None:
            started = time.monotonic()
            digest = self._memo[key] = sha256_file(path)
            self._hash_seconds += time.monotonic() - started
            self.files_read += 1
            self.bytes_read += info.st_size
        return digest

    def tree(self, root: Path) -> str:
        """SHA-256 over a file's content, or over every file of a folder: its relative path and content.

        A missing path has a digest of its own, so its later appearance changes the digest.
        """
        started, hashing = time.monotonic(), self._hash_seconds
        total = hashlib.sha256()
        try:
            info = os.stat(root)
        except FileNotFoundError:
            total.update(b"missing")
        else:
            if stat.S_ISDIR(info.st_mode):
                total.update(b"dir\0")
                for relative, entry_path, entry_info in _walk(root):
                    total.update(relative.encode("utf-8", "surrogateescape") + b"\0")
                    total.update(bytes.fromhex(self.file(entry_path, entry_info)))
            else:
                total.update(b"file\0" + bytes.fromhex(self.file(root, info)))
        self._walk_seconds += time.monotonic() - started - (self._hash_seconds - hashing)
        return total.hexdigest()

    def paths(self, roots: Iterable[Path]) -> str:
        """One digest over several files or folders, in the order given."""
        total = hashlib.sha256()
        for root in roots:
            total.update(bytes.fromhex(self.tree(root)))
        return total.hexdigest()


def _walk(root: Path, prefix: str = "") -> Iterable[tuple[str, Path, os.stat_result]]:
    """Every file under ``root`` in name order, as (relative path, path, stat); ``__pycache__`` left out.

    Folder links are not followed (no cycles); a file link counts as the file it names.
    """
    with os.scandir(root) as entries:
        ordered = sorted(entries, key=lambda e: e.name)
    for entry in ordered:
        relative = f"{prefix}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "__pycache__":
                yield from _walk(Path(entry.path), relative + "/")
        elif entry.is_file():
            yield relative, Path(entry.path), entry.stat()


def run_context(kernel_name: str, hasher: FileHasher) -> str:
    """The part of every stamp that is the same for the whole run (computed once per run).

    The workbench's own code (every file of the package), the versions of the packages a
    reviewer cares about and of Python, the kernel, and the ``PACS_WORKBENCH_*`` environment
    (the project root excepted: relative parameters already say where things are; the key file
    named by ``PACS_WORKBENCH_KEY_FILE`` counts by its content too).
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX) and k != HOME_ENV}
    key_file = os.environ.get(KEY_FILE_ENV)
    context = {
        "version": STAMP_VERSION,
        "code": hasher.tree(PACKAGE_DIR),
        "packages": package_versions(),
        "python": sys.version,
        "kernel": kernel_name,
        "env": env,
        "env_key": hasher.tree(Path(key_file)) if key_file else "",
    }
    return _digest_json(context)


def _digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def workbench_metadata(path: Path) -> dict[str, Any]:
    """The notebook's ``metadata.pacs_workbench`` (its declaration, ``run_by``); empty when it has none."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return {}
    own = metadata.get("pacs_workbench") if isinstance(metadata, dict) else None
    return own if isinstance(own, dict) else {}


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a notebook reads and writes, as templates over its parameters (its metadata)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    always_run_with: tuple[str, ...] = ()

    @classmethod
    def of_notebook(cls, path: Path) -> Declaration | None:
        """The notebook's declaration, or ``None`` when it has none (it then always executes)."""
        own = workbench_metadata(path)
        if INPUTS_KEY not in own or OUTPUTS_KEY not in own:
            return None
        return cls(
            tuple(own[INPUTS_KEY]), tuple(own[OUTPUTS_KEY]), tuple(own.get(ALWAYS_RUN_KEY, ()))
        )  # fmt: skip

    def always_runs(self, values: Mapping[str, Any]) -> bool:
        """Whether a parameter naming a source outside the file system is set."""
        return any(values.get(name) for name in self.always_run_with)


def expand(templates: Sequence[str], values: Mapping[str, Any], base: Path) -> list[Path]:
    """The paths the templates name with these parameter values, resolved as the notebook resolves them.

    ``{name}`` is replaced by the parameter's value; a template naming an empty parameter is
    skipped. The result is resolved against ``base`` (:func:`~pacs_workbench.core.params.project_path`)
    and normalized, so ``"{cases_file}/.."`` is the case table's folder. A template naming a
    parameter the notebook does not have is an error in its metadata.
    """
    paths = []
    for template in templates:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        unknown = [name for name in names if name not in values]
        if unknown:
            raise ParameterError(f"declared path {template!r} names no parameter of the notebook: {unknown}")
        if any(values[name] in (None, "") for name in names):
            continue
        path = project_path(template.format_map({name: values[name] for name in names}), root=base)
        if path is not None:
            paths.append(Path(os.path.normpath(path)))
    return paths


def notebook_stamp(
    hasher: FileHasher, context: str, identity: bytes, values: Mapping[str, Any], inputs: Sequence[Path]
) -> str:
    """SHA-256 over what a notebook's (or a step's) outcome depends on, taken just before it executes.

    Parameters
    ----------
    hasher
        The run's file hasher.
    context
        :func:`run_context`.
    identity
        The notebook's bytes (a step: its name).
    values
        Its parameter values (as JSON with sorted keys).
    inputs
        Its declared inputs, by content (relative paths and bytes of their files).
    """
    total = hashlib.sha256()
    total.update(context.encode() + b"\0")
    total.update(hashlib.sha256(identity).digest())
    total.update(_digest_json(dict(values)).encode() + b"\0")
    total.update(hasher.paths(inputs).encode())
    return total.hexdigest()


class StampBook:
    """The records of one report folder: whether a notebook is up to date, and what this run did.

    Parameters
    ----------
    out
        The report folder (holds :data:`STAMPS_FILE`).
    run_id
        This run, recorded as where an executed notebook ran.
    hasher
        The run's file hasher.

    The file is rewritten after each notebook, so a run that is stopped keeps the records of the
    notebooks it finished.
    """

    def __init__(self, out: Path, run_id: str, hasher: FileHasher) -> None:
        self.file = out / STAMPS_FILE
        self.out = out
        self.run_id = run_id
        self.hasher = hasher
        self.entries: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            stored = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("version") != STAMP_VERSION:
            return {}
        entries = stored.get("notebooks", {})
        return entries if isinstance(entries, dict) else {}

    def outputs_digest(self, outputs: Sequence[Path], record: NotebookRun) -> str:
        """Digest of the declared outputs and of the record's report files (``.ipynb``, ``.html``)."""
        reports = [self.out / name for name in (record.ipynb, record.html) if name]
        return self.hasher.paths([*outputs, *reports])

    def reusable(self, name: str, stamp: str, outputs: Sequence[Path]) -> NotebookRun | None:
        """The record to reuse for ``name`` when it is up to date, else ``None``.

        Up to date: its last record was ``ok``, the stamp is the one recorded, and its outputs and
        report files are as the run that executed it left them. The returned record is that
        run's, marked ``reused_from`` it.
        """
        entry = self.entries.get(name)
        if not entry or entry.get("stamp") != stamp:
            return None
        try:
            record = NotebookRun(**entry["record"])
        except (KeyError, TypeError):
            return None
        if record.status != "ok" or entry.get("outputs") != self.outputs_digest(outputs, record):
            return None
        record.reused_from = str(entry.get("run_id", ""))
        return record

    def executed(self, name: str, stamp: str | None, outputs: Sequence[Path], record: NotebookRun) -> None:
        """Record a notebook this run executed (only an ``ok`` one with a stamp can be reused later)."""
        if stamp is None or record.status != "ok":
            self.entries.pop(name, None)
        else:
            kept = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "reused_from"}
            self.entries[name] = {
                "stamp": stamp, "outputs": self.outputs_digest(outputs, record), "run_id": self.run_id, "record": kept,
            }  # fmt: skip
        self.save()

    def keep_only(self, names: Iterable[str]) -> None:
        """Drop the records of notebooks this run did not execute or reuse, and write the file."""
        wanted = set(names)
        self.entries = {k: v for k, v in self.entries.items() if k in wanted}
        self.save()

    def save(self) -> None:
        write_json_atomic(self.file, {"version": STAMP_VERSION, "notebooks": self.entries}, indent=1, sort_keys=True)
