"""The model card of a modeling run, its headline sentence and its metrics table.

:func:`render_model_card` writes ``model_card.md`` from the content of ``metrics.json``: intended
use, data (counts only, never identifiers), validation, out-of-fold performance with risk strata
and decision curve, the paired model comparisons, and limits. :func:`metrics_table` is the same
headline metrics as a table and :func:`comparison_table` the paired AUC differences (notebook 05
and the explain stage's review show them).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pacs_workbench.core.fmt import format_number

#: How the card and the tables name each model.
MODEL_LABELS = {
    "lightgbm_recalibrated": "LightGBM, recalibrated in-fold",
    "radiomics_lr": "L1 logistic regression (radiomics)",
    "clinical_lr": "logistic regression (clinical only)",
    "cnn": "3-D CNN on lesion crops",
    "hybrid": "LightGBM on features + CNN embeddings",
}


def added_value_statement(models: dict[str, Any], comparisons: dict[str, Any]) -> str:
    """One sentence: does the radiomics model add discrimination to the baselines?"""
    main = models["lightgbm"]
    parts = []
    if "lightgbm_vs_clinical_lr" in comparisons:
        c = comparisons["lightgbm_vs_clinical_lr"]
        lo, hi = c["delta_auc_ci"]
        verdict = (
            "adds discrimination beyond"
            if lo > 0
            else ("is worse than" if hi < 0 else "shows no clear gain over")
        )
        parts.append(
            f"The LightGBM radiomics model {verdict} the clinical-only model "
            f"(AUC difference {c['delta_auc']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})."
        )
    else:
        lo = main["auc_ci"][0]
        verdict = "discriminates better than chance" if lo > 0.5 else "is not clearly better than chance"
        parts.append(f"No clinical baseline was given; the LightGBM model {verdict} (AUC CI lower bound {lo:.3f}).")
    if "lightgbm_vs_radiomics_lr" in comparisons:
        c = comparisons["lightgbm_vs_radiomics_lr"]
        lo, hi = c["delta_auc_ci"]
        parts.append(
            f"Against the L1 logistic regression on the same features: AUC difference {c['delta_auc']:+.3f} "
            f"(95% CI {lo:+.3f} to {hi:+.3f})."
        )
    for key, text in (("cnn_vs_lightgbm", "The CNN on the lesion crops"),
                      ("hybrid_vs_lightgbm", "The hybrid (features + CNN embeddings)")):  # fmt: skip
        if key in comparisons:
            c = comparisons[key]
            lo, hi = c["delta_auc_ci"]
            verdict = "better than" if lo > 0 else ("worse than" if hi < 0 else "not clearly different from")
            parts.append(
                f"{text} is {verdict} LightGBM on the radiomic features (AUC difference {c['delta_auc']:+.3f}, "
                f"95% CI {lo:+.3f} to {hi:+.3f}, same folds)."
            )
    return " ".join(parts)


def render_model_card(metrics: dict[str, Any]) -> str:
    """The model card (Markdown): intended use, data, validation, performance, limits."""
    s = metrics["settings"]
    lines = [
        "# Model card: radiomics risk model",
        "",
        *_intended_use(s),
        *_data_section(metrics, s),
        *_validation_section(s),
        *_performance_section(metrics, s),
        *_comparison_section(metrics),
        *_limits_section(metrics, s),
    ]
    return "\n".join(lines)


def _with_clinical(s: dict[str, Any]) -> bool:
    return bool(s["clinical"] and s["clinical_in_model"])


def _intended_use(s: dict[str, Any]) -> list[str]:
    outcome = (
        f"event within {s['horizon']:g} time units (time-to-event column `{s['time']}`, event column "
        f"`{s['label']}`)"
        if s.get("time")
        else f"binary outcome `{s['label']}`"
    )
    return [
        "## Intended use",
        "",
        f"Research estimate of the risk of the {outcome} from radiomic features"
        + (" and clinical covariates" if _with_clinical(s) else "")
        + ". For hypothesis generation and for planning an external validation; not for clinical "
        "decisions about individual patients. The reported performance is internal (cross-validated) "
        "and applies to cases like those in the training data (same population, scanners and protocols).",
        "",
    ]


def _data_section(metrics: dict[str, Any], s: dict[str, Any]) -> list[str]:
    return [
        "## Data",
        "",
        f"- Cases: {metrics['n']} ({metrics['n_events']} events, {metrics['n'] - metrics['n_events']} "
        f"non-events) from {metrics['n_groups']} patients; {metrics['n_rows']} rows in the table.",
        f"- Excluded: {metrics.get('n_excluded_missing_label', 0)} without label, "
        f"{metrics.get('n_excluded_missing_group', 0)} without patient group"
        + (
            f", {metrics['n_excluded_censored']} censored before the horizon without event"
            if "n_excluded_censored" in metrics
            else ""
        )
        + ".",
        f"- Candidate radiomic features: {metrics['n_features_candidate']}; after in-fold filtering "
        f"(median over folds): {metrics['n_features_after_filter_median']:g}.",
        f"- Clinical covariates: {', '.join(f'`{c}`' for c in s['clinical']) or 'none'}.",
        "- Harmonization: "
        + (f"ComBat by `{s['batch']}` (fitted on training folds only)." if s["batch"] else "none."),
        f"- Events per candidate variable: {metrics['events_per_variable']:.2f}.",
        "",
    ]


def _validation_section(s: dict[str, Any]) -> list[str]:
    return [
        "## Validation",
        "",
        f"Nested cross-validation grouped by patient: {s['repeats']} repeat(s) of {s['outer_folds']} outer "
        f"folds (StratifiedGroupKFold) for the estimate and {s['inner_folds']} inner folds for tuning "
        "(grid search on ROC AUC). Imputation, near-constant and correlation filters (|r| > "
        f"{s['corr_threshold']})"
        + (f", selection of the {s['select_k']} best features" if s["select_k"] else "")
        + (", ComBat harmonization" if s["batch"] else "")
        + ", scaling"
        + (" and recalibration" if s["recalibrate"] else "")
        + " are learned inside each training fold. Tuning grids: LightGBM "
        + ", ".join(f"{k.split('__', 1)[-1]} {v}" for k, v in s["lightgbm_grid"].items())
        + "; L1 logistic regression "
        + ", ".join(f"{k.split('__', 1)[-1]} {v}" for k, v in s["lasso_grid"].items())
        + ". No patient is in both the training and the test part "
        "of any split (checked in code). The AUC CI is a patient-level bootstrap "
        f"({s['n_boot']} resamples) of the out-of-fold predictions.",
        "",
        *_deep_validation(s),
    ]


def _deep_validation(s: dict[str, Any]) -> list[str]:
    deep = s.get("deep")
    if not deep:
        return []
    channels = "the image and the lesion mask" if deep["with_mask"] else "the image only"
    text = (
        f"A small 3-D CNN (MONAI ResNet, stage widths {', '.join(map(str, deep['widths']))}) was trained in the "
        f"same outer folds and repeats, on {deep['crop_size']}^3-voxel lesion-centred crops sampled every "
        f"{deep['crop_spacing_mm']:g} mm ({channels}), with flips, rotations up to {deep['rotate_degrees']:g} "
        f"degrees and intensity jitter, for at most {deep['epochs']} epochs with early stopping (patience "
        f"{deep['patience']}) on the loss of {deep['validation_fraction']:.0%} of the training patients held out."
    )
    if deep["hybrid"]:
        text += (
            " The hybrid is the LightGBM pipeline on the radiomic and clinical features plus that fold's CNN "
            "embeddings (penultimate layer) of its training and test cases; no test case shaped the network "
            "that embedded it."
        )
    return [text, ""]


def _performance_section(metrics: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = [
        "## Performance (out-of-fold)",
        "",
        "| model | ROC AUC (95% CI) | PR AUC | Brier | calibration slope | calibration intercept |",
        "|---|---|---|---|---|---|",
    ]
    labels = {"lightgbm": "LightGBM (radiomics" + (" + clinical)" if _with_clinical(s) else ")"), **{
        k: v for k, v in MODEL_LABELS.items()
    }}  # fmt: skip
    fmt = format_number
    for name, m in metrics["models"].items():
        lo, hi = m["auc_ci"]
        lines.append(
            f"| {labels.get(name, name)} | {fmt(m['auc'])} ({fmt(lo)}-{fmt(hi)}) | {fmt(m['pr_auc'])} | "
            f"{fmt(m['brier'])} | {fmt(m['calibration_slope'], 2)} | {fmt(m['calibration_intercept'], 2)} |"
        )
    prevalence = metrics["n_events"] / metrics["n"]
    lines += [
        "",
        f"Event rate {prevalence:.3f}; a Brier score of {prevalence * (1 - prevalence):.3f} is what always "
        "predicting the event rate gives.",
        "",
        metrics["added_value"],
        "",
        *_risk_section(metrics["models"]["lightgbm"], s),
    ]
    return lines


def _risk_section(main: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = [
        "Risk strata of the LightGBM model (cutoffs "
        + ("given" if s["risk_cutoffs"] else "at the tertiles of the out-of-fold predictions")
        + f": {main['risk_cutoffs'][0]:.3f}, {main['risk_cutoffs'][1]:.3f}; all repeats pooled):",
        "",
        "| stratum | predicted risk | cases | events | observed event rate |",
        "|---|---|---|---|---|",
    ]
    for row in main["risk_strata"]:
        lines.append(
            f"| {row['stratum']} | {row['lower']:.3f}-{row['upper']:.3f} | {row['n']} | {row['n_events']} | "
            f"{format_number(row['event_rate'])} |"
        )
    useful = [d for d in main["decision_curve"] if d["model"] > max(d["treat_all"], 0.0) + 1e-9]
    lines += [
        "",
        "Decision curve: the model has higher net benefit than treating all or none at thresholds "
        + (
            f"{min(d['threshold'] for d in useful):.2f}-{max(d['threshold'] for d in useful):.2f}"
            if useful
            else "none of those examined"
        )
        + " (full curve and calibration curve in metrics.json).",
        "",
    ]
    return lines


def _comparison_section(metrics: dict[str, Any]) -> list[str]:
    table = comparison_table(metrics)
    if table.empty:
        return []
    lines = [
        "## Paired comparisons (same folds, same patients)",
        "",
        "| comparison | AUC difference | 95% CI (patient bootstrap) | P(difference <= 0) | DeLong p |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.iterrows():
        lines.append(
            f"| {name} | {row['AUC difference']:+.3f} | {row['95% CI (bootstrap)']} | "
            f"{row['P(difference <= 0)']:.3f} | {row['DeLong p']} |"
        )
    lines += [
        "",
        "The bootstrap resamples whole patients with the same resamples for both models; DeLong's test is run "
        "per repeat (median p shown) where cases are independent (one case per patient).",
        "",
    ]
    return lines


def _p_value(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The paired AUC differences of ``metrics.json``: one row per comparison (``a - b``)."""
    rows = []
    for key, c in metrics.get("comparisons", {}).items():
        a, b = key.split("_vs_")
        lo, hi = c["delta_auc_ci"]
        delong = c.get("delong") or {}
        rows.append(
            {
                "comparison": f"{a} - {b}",
                "AUC difference": round(float(c["delta_auc"]), 3),
                "95% CI (bootstrap)": f"{lo:+.3f} to {hi:+.3f}",
                "P(difference <= 0)": round(float(c["p_delta_le_0"]), 3),
                "DeLong p": _p_value(delong["p_value"]) if delong.get("applies") else "n/a",
            }
        )
    if not rows:
        return pd.DataFrame(columns=["AUC difference", "95% CI (bootstrap)", "P(difference <= 0)", "DeLong p"])
    return pd.DataFrame(rows).set_index("comparison")


def _limits_section(metrics: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = [
        "## Limits",
        "",
        "- Internal validation only: performance on other hospitals, scanners or protocols is unknown "
        "and usually lower; validate externally before any use.",
        "- Cross-validated estimates vary with the split; the CI covers case sampling, not every "
        "source of variation.",
        "- Retrospective data: selection and labelling biases of the source cohort carry over.",
    ]
    if s["batch"] is None:
        lines.append("- No harmonization: scanner or vendor differences may be learned as signal.")
    if s.get("deep"):
        lines.append(
            "- The CNN learns from few cases: its estimate varies more between folds than the tree models', and its "
            "embeddings in the hybrid come from a network that saw the hybrid's training cases (they look more "
            "informative there than on new cases)."
        )
    for note in metrics["warnings"]:
        lines.append(f"- Warning: {note}")
    lines.append("")
    return lines


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The headline metrics of every model in ``metrics.json``, one row per model."""
    rows = []
    for name, record in metrics["models"].items():
        low, high = record["auc_ci"]
        rows.append(
            {
                "model": name,
                "AUC": round(record["auc"], 3),
                "AUC 95% CI": f"{low:.3f}-{high:.3f}",
                "PR AUC": round(record["pr_auc"], 3),
                "Brier": round(record["brier"], 3),
                "calibration slope": round(record["calibration_slope"], 2),
                "calibration intercept": round(record["calibration_intercept"], 2),
            }
        )
    return pd.DataFrame(rows).set_index("model")
