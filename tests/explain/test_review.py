"""Explain stage: exact, fold-correct SHAP; stability; planted truth recovered; scanner check; notebook."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import SimpleITK as sitk

from pacs_workbench.core.params import NOTEBOOK_DIR
from pacs_workbench.explain import plots
from pacs_workbench.explain import review as explain
from pacs_workbench.explain import viewer as widgets
from pacs_workbench.explain.review import (
    DRIVER_FAMILIES,
    ExplainError,
    Explanations,
    FoldLeakError,
    compare_with_truth,
    explain_model,
    feature_family,
    importance_table,
    run_explain,
    tree_shap,
)
from pacs_workbench.radiomics import model as modeling
from pacs_workbench.radiomics.model import ModelingConfig, run_modeling

VENDORS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA")
# Planted log-odds per driver unit (the synthetic extract's driver definitions; heterogeneity made
# strong enough that 120 cases can show it).
COEF = {"x_diameter": 1.9, "x_irregularity": 2.6, "x_heterogeneity": 3.5, "x_age": 0.9, "x_pack_years": 1.0}
# Stand-ins for medical record numbers in the truth table: they must never reach an output.
FAKE_MRN = "H{:07d}"
NOTEBOOK = NOTEBOOK_DIR / "05_shap_review.ipynb"


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


def make_table(n_patients: int = 60, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Two lesions per patient. Planted drivers: size (Maximum3DDiameter) and margin irregularity
    (Sphericity) in shape, heterogeneity in first-order Entropy, age and pack-years clinical. Texture
    features are noise plus a vendor shift (no outcome signal); firstorder Mean is vendor plus noise."""
    rng = np.random.default_rng(seed)
    per = 2
    n = n_patients * per
    pid = np.repeat(np.arange(n_patients), per)
    age = rng.normal(65, 10, n_patients)
    pack = rng.gamma(2.0, 15.0, n_patients)
    vendor = np.asarray(VENDORS)[rng.integers(0, len(VENDORS), n_patients)]
    diam = np.exp(rng.normal(np.log(9.0), 0.5, n))
    irr = rng.uniform(0, 1, n)
    het = rng.uniform(0, 1, n)
    x = {
        "x_diameter": np.log2(diam / 8),
        "x_irregularity": irr - 0.5,
        "x_heterogeneity": het - 0.5,
        "x_age": ((age - 65) / 10)[pid],
        "x_pack_years": ((pack - 30) / 20)[pid],
    }
    lp = -0.3 + sum(COEF[k] * x[k] for k in COEF)
    label = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    shift = np.array([VENDORS.index(v) for v in vendor], float)[pid]
    table = pd.DataFrame(
        {
            "case_id": [f"case{i:03d}" for i in range(n)],
            "patient": [f"pt{p:02d}" for p in pid],
            "label": label,
            "age": age[pid],
            "pack_years": pack[pid],
            "Manufacturer": vendor[pid],
        }
    )
    table["original_shape_Maximum3DDiameter"] = diam * 1.1 + rng.normal(0, 0.5, n)
    table["original_shape_Sphericity"] = 0.92 - 0.35 * irr + rng.normal(0, 0.03, n)
    table["original_firstorder_Entropy"] = 2.0 + 2.0 * het + rng.normal(0, 0.2, n) + 0.1 * shift
    table["original_firstorder_Mean"] = rng.normal(-40, 25, n) + 30 * shift
    table["original_glcm_Contrast"] = rng.normal(10, 2, n) + 2.5 * shift
    table["original_glrlm_RunEntropy"] = rng.normal(4, 0.4, n) + 0.5 * shift
    table["original_ngtdm_Coarseness"] = rng.normal(0.01, 0.003, n)
    return table, x


def small_config(batch: str | None) -> ModelingConfig:
    return ModelingConfig(
        label="label",
        group="patient",
        batch=batch,
        clinical=("age", "pack_years"),
        repeats=2,
        outer_folds=4,
        inner_folds=3,
        n_boot=100,
        lightgbm_params=dict(modeling.LIGHTGBM_PARAMS, n_estimators=100),
        lightgbm_grid={"clf__min_child_samples": [5, 15]},
    )


def write_lesion(folder: Path, case_id: str, diameter_mm: float) -> tuple[str, str]:
    """A tiny CT-like volume with a sphere of the given diameter and its mask (NIfTI)."""
    spacing = (0.8, 0.8, 1.5)
    zz, yy, xx = np.mgrid[0:12, 0:36, 0:36]
    radius = diameter_mm / 2
    dist = np.sqrt(((xx - 18) * spacing[0]) ** 2 + ((yy - 18) * spacing[1]) ** 2 + ((zz - 6) * spacing[2]) ** 2)
    mask = (dist <= radius).astype(np.uint8)
    rng = np.random.default_rng(int(case_id[-3:]))
    image = np.where(mask > 0, 30.0, -850.0) + rng.normal(0, 25, mask.shape)
    paths = []
    for name, array in (("image", image.astype(np.float32)), ("mask", mask)):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing(spacing)
        path = folder / f"{case_id}_{name}.nii.gz"
        sitk.WriteImage(itk, str(path))
        paths.append(str(path))
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Model outputs with and without ComBat, a features table with images, and a truth folder."""
    root = tmp_path_factory.mktemp("explain")
    table, drivers = make_table()
    truth = root / "truth"
    truth.mkdir()
    pd.DataFrame(
        {"PatientID": [FAKE_MRN.format(4_000_000 + i) for i in range(len(table))], "has_imaging": 1, **drivers}
    ).to_csv(truth / "patients.csv", index=False)
    (truth / "model.json").write_text(json.dumps({"coefficients": COEF}))
    volumes = root / "volumes"
    volumes.mkdir()
    images, masks = [], []
    for case_id, diameter in zip(table["case_id"], table["original_shape_Maximum3DDiameter"], strict=True):
        image, mask = write_lesion(volumes, case_id, float(diameter))
        images.append(image)
        masks.append(mask)
    features = table.drop(columns=["label", "patient", "age", "pack_years"]).assign(image=images, mask=masks)
    features.to_parquet(root / "features.parquet", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_modeling(table, root / "model", small_config("Manufacturer"), progress=False)
        run_modeling(table, root / "model_unharmonized", small_config(None), progress=False)
    return {"root": root, "table": table, "truth": truth, "features": root / "features.parquet"}


@pytest.fixture(scope="module")
def review(workspace: dict[str, Any]) -> explain.ShapReview:
    return run_explain(
        workspace["root"] / "model", workspace["root"] / "explain", features_file=workspace["features"], progress=False
    )


@pytest.fixture(scope="module")
def unharmonized(workspace: dict[str, Any]) -> explain.ShapReview:
    return run_explain(workspace["root"] / "model_unharmonized", features_file=workspace["features"], progress=False)


# --- exactness -----------------------------------------------------------------------------------


def test_contributions_add_up_to_the_booster_raw_output(workspace: dict[str, Any], review: explain.ShapReview) -> None:
    shap_file = pd.read_parquet(workspace["root"] / "explain" / "shap.parquet")
    features = review.explanations.feature_names
    models = workspace["root"] / "model" / "models"
    worst = 0.0
    for (repeat, fold), rows in shap_file.groupby(["repeat", "outer_fold"]):
        booster = lightgbm.Booster(model_file=str(models / f"r{repeat}_f{fold}.txt"))
        matrix = pd.read_parquet(models / f"r{repeat}_f{fold}_test.parquet").set_index("row_index")
        raw = booster.predict(matrix.loc[rows["row_index"], booster.feature_name()], raw_score=True)
        total = rows[features].sum(axis=1).to_numpy() + rows["expected_value"].to_numpy()
        worst = max(worst, float(np.max(np.abs(total - raw))))
    assert worst < 1e-9
    assert review.explanations.folds["additivity_max_error"].max() < 1e-9
    # The explained risk is the one the modeling stage reported for that case and repeat.
    assert review.explanations.folds["prediction_max_diff"].max() < 1e-9


def test_pred_contrib_matches_shap_tree_explainer(workspace: dict[str, Any]) -> None:
    models = workspace["root"] / "model" / "models"
    booster = lightgbm.Booster(model_file=str(models / "r0_f0.txt"))
    X = pd.read_parquet(models / "r0_f0_test.parquet")[booster.feature_name()]
    native, native_expected = tree_shap(booster, X, "lightgbm")
    package, package_expected = tree_shap(booster, X, "shap")
    assert native.shape == package.shape == X.shape
    assert np.max(np.abs(native - package)) < 1e-9
    assert np.max(np.abs(native_expected - package_expected)) < 1e-9
    assert np.abs(native).sum() > 0
    with pytest.raises(ExplainError):
        tree_shap(booster, X, "kernel")


# --- fold correctness ----------------------------------------------------------------------------


def test_every_case_is_explained_by_a_model_that_did_not_train_on_it(
    workspace: dict[str, Any], review: explain.ShapReview
) -> None:
    shap_frame = review.explanations.shap
    models = workspace["root"] / "model" / "models"
    predictions = pd.read_parquet(workspace["root"] / "model" / "predictions.parquet")
    group_of = predictions.drop_duplicates("row_index").set_index("row_index")["group"]
    for (repeat, fold), rows in shap_frame.groupby(["repeat", "outer_fold"]):
        bundle = joblib.load(models / f"r{repeat}_f{fold}.joblib")
        explained = set(rows["row_index"])
        assert explained == set(bundle["test_rows"])
        assert not explained & set(bundle["train_rows"])
        assert not set(group_of[list(explained)]) & set(group_of[bundle["train_rows"]])
    # Each case once per repeat, every predicted case explained.
    assert not shap_frame.duplicated(["row_index", "repeat"]).any()
    assert len(shap_frame) == len(predictions)


def test_a_fold_that_would_explain_its_own_training_cases_is_refused(workspace: dict[str, Any], tmp_path: Path) -> None:
    tampered = tmp_path / "model"
    shutil.copytree(workspace["root"] / "model", tampered)
    bundle_file = tampered / "models" / "r1_f2.joblib"
    bundle = joblib.load(bundle_file)
    bundle["train_rows"] = [*bundle["train_rows"], bundle["test_rows"][0]]
    joblib.dump(bundle, bundle_file)
    with pytest.raises(FoldLeakError, match="repeat 1 fold 2"):
        explain_model(tampered, progress=False)


def test_missing_folds_fail_clearly_or_skip_with_a_note(tmp_path: Path) -> None:
    with pytest.raises(ExplainError, match="no fold models"):
        explain_model(tmp_path, progress=False)
    empty = run_explain(tmp_path, missing_ok=True, progress=False)
    assert not empty.available and "No fold models" in empty.notes[0]
    assert empty.importance.empty and empty.case_studies().empty
    assert compare_with_truth(empty, tmp_path).passed is None
    assert "nothing" in explain.describe_model(tmp_path)
    figures = [
        plots.plot_shap_importance(empty.importance),
        plots.plot_beeswarm(empty.explanations, empty.importance),
        plots.plot_family_importance(empty.families),
        plots.plot_scanner_dependence(explain.scanner_dependence(empty)),
        plots.plot_case_studies(empty, []),
    ]
    assert all(fig.axes for fig in figures)


# --- global importance and stability ------------------------------------------------------------


def test_feature_families() -> None:
    assert feature_family("original_shape_Maximum3DDiameter") == ("shape", "shape", "original")
    assert feature_family("wavelet-LLH_firstorder_Entropy") == ("first order", "firstorder", "wavelet-LLH")
    assert feature_family("log-sigma-1-0-mm-3D_glszm_ZoneEntropy")[0] == "texture"
    for cls in ("glcm", "glrlm", "glszm", "gldm", "ngtdm"):
        assert feature_family(f"original_{cls}_X")[0] == "texture"
    assert feature_family("smoking=current", clinical={"smoking=current"})[0] == "clinical"
    assert feature_family("lesion_count") == ("other", "", "")


def _toy_explanations(per_fold: list[dict[str, float]]) -> Explanations:
    """Explanations with one case per fold and given |SHAP| per feature (0 = feature not in that model)."""
    names = list(per_fold[0])
    rows, values = [], []
    for fold, shap_values in enumerate(per_fold):
        keys = {"row_index": fold, "case_id": f"c{fold}", "repeat": 0, "outer_fold": fold}
        rows.append({**keys, "label": 0, "expected_value": 0.0, "raw_output": 0.0, "prob": 0.5, **shap_values})
        values.append({**keys, **{n: (1.0 if v else np.nan) for n, v in shap_values.items()}})
    features = explain.describe_features(names, names, ())
    features["n_folds"] = len(per_fold)
    return Explanations(pd.DataFrame(rows), pd.DataFrame(values), features, pd.DataFrame())


def test_a_feature_high_in_one_fold_and_absent_elsewhere_is_unstable() -> None:
    folds = [
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.9},
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.0},
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.0},
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.0},
    ]
    table = importance_table(_toy_explanations(folds), top_k=2, min_stability=0.5).set_index("feature")
    assert table.loc["original_shape_A", "rank"] == 1 and table.loc["original_shape_A", "fold_stability"] == 1.0
    assert not table.loc["original_glcm_B", "unstable"]
    assert table.loc["original_glcm_C", "fold_stability"] == 0.25
    assert table.loc["original_glcm_C", "unstable"]
    assert table.loc["original_glcm_C", "in_model_share"] == 0.25
    assert table.loc["original_glcm_C", "fold_rank_min"] == 2 and table.loc["original_glcm_C", "fold_rank_max"] == 3
    # With room for every feature in the "top", an unused feature still does not rank high there.
    roomy = importance_table(_toy_explanations(folds), top_k=3).set_index("feature")
    assert roomy.loc["original_glcm_C", "fold_stability"] == 0.25 and roomy.loc["original_glcm_C", "unstable"]


def test_outputs_are_written_with_their_columns_and_cached(
    workspace: dict[str, Any], review: explain.ShapReview
) -> None:
    out = workspace["root"] / "explain"
    shap_file = pd.read_parquet(out / "shap.parquet")
    assert list(shap_file.columns[: len(explain.KEY_COLUMNS)]) == list(explain.KEY_COLUMNS)
    assert "original_shape_Sphericity" in shap_file.columns and "age" in shap_file.columns
    importance = pd.read_csv(out / "shap_importance.csv")
    for column in ("feature", "family", "mean_abs_shap", "rank", "fold_stability", "unstable"):
        assert column in importance.columns
    assert list(importance["rank"]) == list(range(1, len(importance) + 1))
    assert importance["mean_abs_shap"].is_monotonic_decreasing
    assert set(importance["family"]) == {"shape", "first order", "texture", "clinical"}
    manifest = json.loads((out / "explain.json").read_text())
    assert manifest["n_folds"] == 8 and manifest["additivity_max_error"] < 1e-9
    again = run_explain(workspace["root"] / "model", out, features_file=workspace["features"], progress=False)
    assert again.from_cache
    pd.testing.assert_frame_equal(again.importance, review.importance)


def test_family_contributions_add_up_per_case(review: explain.ShapReview) -> None:
    expl = review.explanations
    families = explain.family_contributions(expl)
    summed = families[[f for f in explain.FAMILIES if f in families.columns]].sum(axis=1)
    np.testing.assert_allclose(summed, expl.shap[expl.feature_names].sum(axis=1), atol=1e-12)
    assert review.families["share"].sum() == pytest.approx(1.0)


# --- the planted truth ---------------------------------------------------------------------------


def test_planted_driver_families_rank_above_the_rest(workspace: dict[str, Any], review: explain.ShapReview) -> None:
    # In this table heterogeneity is planted in first-order Entropy only, so texture carries no driver.
    mapping = {**DRIVER_FAMILIES, "x_heterogeneity": ("first order",)}
    check = compare_with_truth(review, workspace["truth"], driver_families=mapping)
    groups = check.groups.set_index("group")
    planted = groups.loc[["shape", "first order", "clinical"], "shap_rank"]
    assert planted.max() < groups.loc["texture", "shap_rank"], check.verdict
    assert check.passed and check.verdict.startswith("**The model found the planted signal.**")
    assert check.drivers["found"].all()
    assert groups.loc["texture", "planted_sd"] == 0 and not groups.loc["texture", "planted"]
    # The default mapping (heterogeneity may show in first order or texture) agrees.
    default = compare_with_truth(review, workspace["truth"])
    assert default.passed
    assert "first order + texture" in set(default.groups["group"])


def test_truth_check_says_so_when_the_model_misses_the_signal(
    workspace: dict[str, Any], review: explain.ShapReview
) -> None:
    # Pretend the outcome was driven by texture only: the model's texture family is not what it leans on.
    check = compare_with_truth(review, workspace["truth"], driver_families={"x_heterogeneity": ("texture",)})
    assert check.passed is False
    assert "did not find" in check.verdict or "only part" in check.verdict


def test_truth_outputs_carry_no_identifiers(
    workspace: dict[str, Any], review: explain.ShapReview, tmp_path: Path
) -> None:
    saved = compare_with_truth(review, workspace["truth"]).save(tmp_path)
    text = Path(saved["truth"]).read_text()
    assert "H4000" not in text and "PatientID" not in text


# --- cases, scanner, widget ----------------------------------------------------------------------


def test_case_studies_pick_the_right_cases_and_show_their_lesions(review: explain.ShapReview) -> None:
    studies = review.case_studies(3)
    summary = explain.case_summary(review.explanations)
    threshold = float(summary["label"].astype(float).mean())
    top = studies[studies["category"] == "highest risk"]
    assert top["risk"].min() >= summary["risk"].nlargest(3).min() - 1e-12
    fn = studies[studies["category"] == "false negative"]
    fp = studies[studies["category"] == "false positive"]
    assert len(fn) and (fn["label"] == 1).all() and (fn["risk"] < threshold).all()
    assert len(fp) and (fp["label"] == 0).all() and (fp["risk"] >= threshold).all()
    assert studies["image_available"].all()
    case = review.case(str(fn["case_id"].iloc[0]))
    assert case.expected_value + case.contributions["shap"].sum() == pytest.approx(case.raw_output, abs=1e-9)
    # Raw (unharmonized) values from the features table sit beside the model inputs.
    assert case.contributions["raw_value"].notna().sum() >= 7
    fig = plots.plot_case_studies(review, studies.head(2))
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 * 3


def test_a_missing_lesion_image_is_shown_as_missing(review: explain.ShapReview, tmp_path: Path) -> None:
    case_id = str(review.explanations.shap["case_id"].iloc[0])
    cases = review.cases.copy()
    cases.loc[cases["case_id"] == case_id, "image"] = str(tmp_path / "gone.nii.gz")
    partial = explain.ShapReview(
        review.explanations, review.importance, review.fold_importance, review.families, cases, review.raw_values
    )
    assert partial.lesion(case_id) == ("", "")
    fig = plots.plot_case_studies(partial, [case_id])
    assert not any(ax.images for ax in fig.axes)
    assert any("not available" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_image_paths_can_come_from_a_separate_cases_table(workspace: dict[str, Any], tmp_path: Path) -> None:
    features = pd.read_parquet(workspace["features"])
    features.drop(columns=["image", "mask"]).to_parquet(tmp_path / "features.parquet")
    features[["case_id", "image", "mask"]].assign(series_folder="identified/zone").to_parquet(
        tmp_path / "cases.parquet"
    )
    cases, raw, notes = explain.load_cases(tmp_path / "features.parquet", images_file=tmp_path / "cases.parquet")
    assert not notes and list(cases.columns) == list(explain.CASE_COLUMNS)
    assert cases["image"].map(lambda p: Path(p).is_file()).all() and "original_shape_Sphericity" in raw.columns
    _, _, notes = explain.load_cases(tmp_path / "features.parquet")
    assert any("'image'" in n for n in notes)


def test_harmonization_removes_the_vendor_from_the_contributions(
    review: explain.ShapReview, unharmonized: explain.ShapReview, tmp_path: Path
) -> None:
    assert review.harmonized_by == "Manufacturer" and unharmonized.harmonized_by is None
    check = explain.scanner_dependence(review, unharmonized)
    shares = check.vendor_share
    before, after = shares["not harmonized"], shares["harmonized (ComBat by Manufacturer)"]
    # Texture and firstorder Mean carry a pure vendor shift: without ComBat their SHAP follows the vendor.
    assert before > 0.05 and after < before / 3, check.statement
    chosen = set(check.summary["feature"])
    assert "original_glcm_Contrast" in chosen and check.summary["vendor_share_feature"].min() >= 0.1
    assert set(check.per_vendor["vendor"]) == set(VENDORS)
    assert set(check.outcome["vendor"]) == set(VENDORS)
    written = check.save(tmp_path)
    assert pd.read_csv(written["per_vendor"]).shape[0] == len(check.per_vendor)
    single = explain.scanner_dependence(review)
    assert "no before/after" in single.statement


def test_case_picker_lists_every_case_and_draws_one(review: explain.ShapReview) -> None:
    picker = widgets.case_picker(review)
    dropdown = picker.children[0]
    assert len(dropdown.options) == review.explanations.shap["case_id"].nunique()
    assert dropdown.value == review.typical_cases(1)[0]
    assert "JupyterLab" in picker._repr_mimebundle_()["text/plain"]
    image = picker.children[1]
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG")
    dropdown.value = dropdown.options[0][1]  # the highest-risk case
    assert bytes(image.value).startswith(b"\x89PNG") and bytes(image.value) != first


# --- the notebook --------------------------------------------------------------------------------


def test_notebook_is_saved_without_outputs_and_has_literal_parameters() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# 05")
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines()[1:]:
        assert ": " in line and " = " in line and "  # " in line, line
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
            assert "def " not in cell.source and "class " not in cell.source
    declared = pm.inspect_notebook(str(NOTEBOOK))
    assert {"model_dir", "unharmonized_model_dir", "features_file", "truth_dir", "out_dir", "n_cases"} <= set(declared)


@pytest.mark.slow
def test_notebook_runs_under_papermill(workspace: dict[str, Any], tmp_path: Path) -> None:
    root = workspace["root"]
    out_dir = tmp_path / "explain"
    executed = tmp_path / "05_shap_review.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={
            "model_dir": str(root / "model"),
            "unharmonized_model_dir": str(root / "model_unharmonized"),
            "features_file": str(workspace["features"]),
            "truth_dir": str(workspace["truth"]),
            "out_dir": str(out_dir),
            "n_cases": 2,
        },
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=300,  # a hung cell fails the test instead of stalling the run
    )
    for name in ("shap.parquet", "shap_importance.csv", "shap_family_importance.csv", "explain.json",
                 "truth_check.json", "scanner_dependence.csv"):  # fmt: skip
        assert (out_dir / name).is_file(), name
    text = executed.read_text()
    assert "The model found the planted signal" in text
    assert "image/png" in text
    assert "H4000" not in text, "an identifier from the truth table reached the report"
    assert json.loads((out_dir / "truth_check.json").read_text())["passed"] is True


@pytest.mark.slow
def test_notebook_before_the_modeling_stage_has_run(tmp_path: Path) -> None:
    """No model folder yet (e.g. a run too small to model): every section says so instead of failing."""
    executed = tmp_path / "05_shap_review.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={
            "model_dir": str(tmp_path / "no_model"),
            "features_file": str(tmp_path / "no_features.parquet"),
            "truth_dir": "",
            "out_dir": str(tmp_path / "explain"),
        },
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=300,  # a hung cell fails the test instead of stalling the run
    )
    text = executed.read_text()
    assert "the modeling stage has not run" in text and "No fold models" in text
    assert not (tmp_path / "explain" / "shap.parquet").exists()
