"""The install itself: pinned dependencies, pyradiomics built, conda file in step with pyproject."""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import SimpleITK as sitk
import yaml

from pacs_workbench.core.params import REPO_ROOT

#: conda-forge names that differ from the PyPI ones beyond a ``python-`` prefix.
CONDA_NAMES = {"pytorch": "torch"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pyradiomics_extracts_features() -> None:
    from radiomics import featureextractor

    image = np.zeros((8, 16, 16), dtype=np.float32)
    image[2:6, 4:12, 4:12] = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8) % 7
    mask = (image > 0).astype(np.uint8)
    extractor = featureextractor.RadiomicsFeatureExtractor()
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("firstorder")
    extractor.enableFeatureClassByName("glcm")
    result = extractor.execute(sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask))
    assert float(result["original_firstorder_Maximum"]) == 6.0
    assert "original_glcm_Contrast" in result


def test_environment_yml_names_every_runtime_dependency() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wanted = {_norm(re.split(r"[<>=!~ \[]", d)[0]) for d in project["project"]["dependencies"]}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    named = set()
    for entry in env["dependencies"]:
        items = entry["pip"] if isinstance(entry, dict) else [entry]
        for item in items:
            name = _norm(re.split(r"[<>=!~ ]", item)[0]).removeprefix("python-")
            named.add(CONDA_NAMES.get(name, name))
    missing = sorted(wanted - named)
    assert not missing, f"environment.yml lacks {missing}"


def test_every_dependency_is_pinned() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pins = {
        _norm(m.group(1))
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==", (REPO_ROOT / "constraints.txt").read_text(), re.M)
    }
    deps = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["dev"]
    # pyradiomics is pinned by archive digest in tools/install_pyradiomics.py.
    unpinned = sorted(
        {_norm(re.split(r"[<>=!~ \[]", d)[0]) for d in deps} - pins - {"pyradiomics"}
    )
    assert not unpinned, f"constraints.txt does not pin {unpinned}"


def test_notebooks_are_committed_without_outputs() -> None:
    import nbformat

    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} has stored outputs"
                assert cell.execution_count is None, f"{path.name} has execution counts"


def test_every_notebook_cell_has_an_id() -> None:
    # nbformat 4.5 requires cell ids: a cell without one makes every run print a warning
    # (a hard error in later nbformat versions)
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        missing = [i for i, cell in enumerate(notebook["cells"]) if not cell.get("id")]
        assert not missing, f"{path.name}: cells {missing} have no id"


def test_notebooks_follow_conventions() -> None:
    import nbformat

    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), path.name
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: exactly one parameters cell"
        for line in tagged[0].source.splitlines():
            if line.strip() and not line.startswith("#"):
                assert re.match(r"^\w+: [\w\[\], ]+ = .+  # .+", line), f"{path.name}: {line!r}"
        for cell in cells:
            if cell.cell_type == "code":
                assert not re.search(r"^\s*(def|class) ", cell.source, re.M), f"{path.name} defines code"
