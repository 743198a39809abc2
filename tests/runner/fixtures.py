"""Small notebooks and parameter files made in the test, for real papermill runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def make_notebook(path: Path, body: str, *, show: bool = False) -> Path:
    """A numbered-notebook lookalike: a title, a ``parameters`` cell (``value``, ``label``) and ``body``."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('value: int = 1  # a number\nlabel: str = "x"  # a label')
    params.metadata["tags"] = ["parameters"]
    code = new_code_cell(body)
    if show:
        code.metadata["tags"] = ["show-code"]
    nb.cells = [new_markdown_cell(f"# Title of {path.stem}"), params, code]
    nbformat.write(nb, path)
    return path


def write_params(folder: Path) -> Path:
    """A parameter file setting ``value`` for every notebook and ``label`` for ``01_first``, and its input data."""
    file = folder / "params.yaml"
    file.write_text("shared:\n  value: 7\n  data_dir: inputs\n01_first:\n  label: first-label\n")
    (folder / "inputs" / "dicom").mkdir(parents=True)
    (folder / "inputs" / "dicom" / "a.dcm").write_bytes(b"data")
    return file


def make_declared_notebook(
    path: Path, params: dict[str, str], body: str, inputs: list[str], outputs: list[str]
) -> Path:
    """A notebook declaring what it reads and writes (``pacs_workbench.inputs``/``outputs`` templates).

    ``params`` are its string parameters with their defaults; ``body`` runs after them.
    """
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["pacs_workbench"] = {"inputs": inputs, "outputs": outputs}
    cell = new_code_cell("\n".join(f"{name}: str = {default!r}" for name, default in params.items()))
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# Title of {path.stem}"), cell, new_code_cell(body)]
    nbformat.write(nb, path)
    return path
