"""Did the model find the planted signal? SHAP by feature family against the synthetic ground truth.

The synthetic extract's outcome follows a known logistic model of five drivers (size and growth,
margin irregularity, internal heterogeneity, age, smoking), written under ``truth/``: the driver
values per patient in ``patients.csv`` and the coefficients in ``model.json``. This check reads
those two files only (the driver columns, never an identifier) and compares the strength of each
planted driver with the SHAP its feature families hold. It applies to the synthetic extract only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import json_ready, write_text_atomic
from pacs_workbench.explain.families import FAMILIES, feature_family, short_name
from pacs_workbench.explain.importance import family_contributions, importance_table
from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.shap import ExplainError, Explanations

DRIVER_FAMILIES: dict[str, tuple[str, ...]] = {
    "x_diameter": ("shape",),
    "x_irregularity": ("shape",),
    "x_heterogeneity": ("first order", "texture"),
    "x_age": ("clinical",),
    "x_pack_years": ("clinical",),
}
"""Planted drivers of the synthetic outcome (``truth/patients.csv``) and the feature families
that can carry them: size and growth and margin irregularity are shape, internal heterogeneity
is first-order or texture, age and smoking are clinical."""

DRIVER_LABELS: dict[str, str] = {
    "x_diameter": "size and growth",
    "x_irregularity": "margin irregularity",
    "x_heterogeneity": "internal heterogeneity",
    "x_age": "age",
    "x_pack_years": "smoking (pack-years)",
}

GROUP_COLUMNS = [
    "group",
    "families",
    "drivers",
    "planted",
    "planted_sd",
    "planted_share",
    "mean_abs_shap",
    "shap_share",
    "shap_rank",
    "top_feature",
]
DRIVER_COLUMNS = ["driver", "meaning", "coefficient", "planted_sd", "group", "found"]
LOOK_ALIKE_COLUMNS = ["group", "feature", "mean_abs_shap", "look_alike", "look_alike_group", "rho"]
OVER_CREDIT = 1.5
"""A planted group holding more than this many times its planted share of the SHAP is over-credited."""


@dataclass
class TruthCheck:
    """The SHAP family ranking against the planted drivers of the synthetic outcome.

    Attributes
    ----------
    groups : DataFrame
        One row per signal group (families linked by a shared driver, e.g. first order + texture
        for heterogeneity; families without a driver alone): ``group``, ``families``,
        ``drivers``, ``planted``, ``planted_sd`` (SD of the group's planted log-odds term over the
        patients), ``planted_share``, ``mean_abs_shap`` (of the group's summed SHAP),
        ``shap_share``, ``shap_rank``, ``top_feature``.
    drivers : DataFrame
        ``driver``, ``meaning``, ``coefficient``, ``planted_sd``, ``group``, ``found``.
    passed : bool or None
        Planted groups rank above every group without a driver and each holds at least
        ``min_share`` of the SHAP; ``None`` when there is no truth to compare with.
    verdict : str
        Markdown, plain words.
    order_matches : bool or None
        The model orders the planted groups as their planted strength does.
    look_alikes : DataFrame
        For each planted group holding much more SHAP than its planted share (over 1.5 times), its
        leading features (``group``, ``feature``, ``mean_abs_shap``) with the most similar feature
        of an under-credited planted group (``look_alike``, ``look_alike_group``) and their
        absolute Spearman ``rho`` over cases: a hint that the over-credited group carries another
        group's signal.
    """

    groups: pd.DataFrame
    drivers: pd.DataFrame
    passed: bool | None
    verdict: str
    order_matches: bool | None = None
    look_alikes: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write ``truth_check.json`` (no identifiers: driver names and aggregates only)."""
        if self.passed is None:
            return {}
        data = {
            "passed": self.passed,
            "verdict": self.verdict,
            "order_matches": self.order_matches,
            "groups": self.groups.to_dict(orient="records"),
            "drivers": self.drivers.to_dict(orient="records"),
            "look_alikes": self.look_alikes.to_dict(orient="records"),
        }
        path = Path(out_dir) / "truth_check.json"
        write_text_atomic(path, json.dumps(json_ready(data), indent=2) + "\n")
        return {"truth": str(path)}


def planted_drivers(truth_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Driver values per patient and their coefficients from a synthetic extract's ``truth/``.

    Reads only the driver columns (``x_*``) of ``patients.csv`` and ``has_imaging``, never an
    identifier; coefficients from ``model.json``. Without ``model.json`` they are derived from
    ``patients.csv``'s ``linear_predictor`` (intercept plus coefficients times drivers) by least
    squares.
    """
    root = Path(truth_dir)
    patients = root / "patients.csv"
    if not patients.is_file():
        raise ExplainError(f"no patients.csv in {root.name}")
    header = pd.read_csv(patients, nrows=0).columns
    drivers = [c for c in header if c.startswith("x_")]
    model = root / "model.json"
    extra = ("has_imaging",) if model.is_file() else ("has_imaging", "linear_predictor")
    table = pd.read_csv(patients, usecols=[*drivers, *(c for c in extra if c in header)])
    if model.is_file():
        coef = {str(k): float(v) for k, v in json.loads(model.read_text(encoding="utf-8"))["coefficients"].items()}
    else:
        coef = _fitted_coefficients(table, drivers, root.name)
    if "has_imaging" in table.columns:
        table = table[table["has_imaging"].astype(float) == 1]
    return table[drivers], coef


def _fitted_coefficients(table: pd.DataFrame, drivers: Sequence[str], folder: str) -> dict[str, float]:
    """The coefficients of the planted linear predictor, recovered from its values per patient."""
    if "linear_predictor" not in table.columns or not drivers:
        raise ExplainError(f"no model.json in {folder} and no linear_predictor in patients.csv to derive it from")
    data = table[[*drivers, "linear_predictor"]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(data) <= len(drivers):
        raise ExplainError(f"no model.json in {folder} and too few patients to derive its coefficients")
    design = np.column_stack([np.ones(len(data)), data[list(drivers)].to_numpy(dtype=float)])
    solution = np.linalg.lstsq(design, data["linear_predictor"].to_numpy(dtype=float), rcond=None)[0]
    return {str(d): float(c) for d, c in zip(drivers, solution[1:], strict=True)}


def _signal_groups(families: Sequence[str], driver_families: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Families joined when a driver spans them; each other family on its own."""
    groups: list[set[str]] = []
    for fams in driver_families.values():
        members = {f for f in fams if f in families}
        if not members:
            continue
        merged = [g for g in groups if g & members]
        for g in merged:
            groups.remove(g)
            members |= g
        groups.append(members)
    covered = set().union(*groups) if groups else set()
    groups += [{f} for f in families if f not in covered]
    return [[f for f in FAMILIES if f in g] for g in groups]


def compare_with_truth(
    review: ShapReview | Explanations,
    truth_dir: str | os.PathLike[str] | None,
    *,
    driver_families: Mapping[str, Sequence[str]] | None = None,
    min_share: float = 0.05,
) -> TruthCheck:
    """Did the model find the planted signal? SHAP by feature family against the known drivers.

    Families that a driver can show up in form one *signal group* (shape: size and margin;
    first order + texture: heterogeneity; clinical: age and smoking); families no driver maps to
    are groups of their own. The planted strength of a group is the SD over patients of its
    drivers' term in the true linear predictor; the model's is the mean |summed SHAP| of its
    families. The check passes when every planted group ranks above every unplanted one and
    holds at least ``min_share`` of the SHAP.

    Parameters
    ----------
    review
        The review (or its explanations).
    truth_dir
        ``truth/`` of the synthetic extract (see :func:`planted_drivers`); ``None``/``""``: no check.
    driver_families
        Driver column -> families that can carry it (default :data:`DRIVER_FAMILIES`).
    min_share
        Smallest share of the family-level SHAP a planted group must hold to count as found.
    """
    mapping = dict(driver_families or DRIVER_FAMILIES)
    empty_groups = pd.DataFrame(columns=GROUP_COLUMNS)
    empty_drivers = pd.DataFrame(columns=DRIVER_COLUMNS)
    if not truth_dir or not (Path(truth_dir) / "patients.csv").is_file():
        note = "No ground truth given" if not truth_dir else "No ground truth found"
        return TruthCheck(
            empty_groups,
            empty_drivers,
            None,
            f"{note}: the comparison with planted drivers applies to the synthetic extract only.",
        )
    expl = review.explanations if isinstance(review, ShapReview) else review
    if expl.shap.empty:
        return TruthCheck(empty_groups, empty_drivers, None, "No explanations to compare with the ground truth.")
    drivers, coef = planted_drivers(truth_dir)
    importance = importance_table(expl)
    table = _group_table(family_contributions(expl), importance, drivers, coef, mapping)
    planted = table[table["planted"]]
    unplanted = table[~table["planted"]]
    worst_planted = int(planted["shap_rank"].max()) if len(planted) else 0
    best_unplanted = int(unplanted["shap_rank"].min()) if len(unplanted) else len(table) + 1
    group_found = {
        str(r["group"]): bool(r["shap_rank"] < best_unplanted and r["shap_share"] >= min_share)
        for r in planted.to_dict(orient="records")
    }
    passed = bool(len(planted)) and worst_planted < best_unplanted and all(group_found.values())
    check = TruthCheck(table, _driver_table(table, drivers, coef, mapping, group_found), passed, "")
    by_planted = planted.sort_values("planted_sd", ascending=False, kind="stable")["group"].tolist()
    check.order_matches = by_planted == planted.sort_values("shap_rank")["group"].tolist()
    check.look_alikes = _look_alikes(review, importance, table)
    check.verdict = _truth_verdict(check, min_share)
    return check


def _group_table(
    contrib: pd.DataFrame,
    importance: pd.DataFrame,
    drivers: pd.DataFrame,
    coef: Mapping[str, float],
    mapping: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """One row per signal group: its planted strength and its SHAP, ranked by SHAP (:data:`GROUP_COLUMNS`)."""
    present = [f for f in FAMILIES if f in contrib.columns]
    rows = []
    for members in _signal_groups(present, mapping):
        members_drivers = [d for d, fams in mapping.items() if any(f in members for f in fams)]
        planted_term = sum(
            (coef.get(d, 0.0) * drivers[d].astype(float) for d in members_drivers if d in drivers.columns),
            start=pd.Series(0.0, index=drivers.index),
        )
        top = importance[importance["family"].isin(members)].head(1)
        rows.append(
            {
                "group": " + ".join(members),
                "families": members,
                "drivers": [DRIVER_LABELS.get(d, d) for d in members_drivers],
                "planted": bool(members_drivers),
                "planted_sd": float(planted_term.std(ddof=1)) if members_drivers and len(planted_term) > 1 else 0.0,
                "mean_abs_shap": float(contrib[members].sum(axis=1).abs().mean()),
                "top_feature": str(top["feature"].iloc[0]) if len(top) else "",
            }
        )
    table = pd.DataFrame(rows)
    table["planted_share"] = table["planted_sd"] / max(float(table["planted_sd"].sum()), 1e-12)
    table["shap_share"] = table["mean_abs_shap"] / max(float(table["mean_abs_shap"].sum()), 1e-12)
    table = table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    table["shap_rank"] = np.arange(1, len(table) + 1)
    return table[GROUP_COLUMNS]


def _driver_table(
    groups: pd.DataFrame,
    drivers: pd.DataFrame,
    coef: Mapping[str, float],
    mapping: Mapping[str, Sequence[str]],
    group_found: Mapping[str, bool],
) -> pd.DataFrame:
    """One row per planted driver: its coefficient, planted strength, signal group and whether it was found."""
    rows = []
    for d, fams in mapping.items():
        group = next(
            (
                str(g)
                for g, members in zip(groups["group"], groups["families"], strict=True)
                if set(fams) & set(members)
            ),
            "",
        )
        sd = float((coef.get(d, 0.0) * drivers[d].astype(float)).std(ddof=1)) if d in drivers.columns else float("nan")
        rows.append(
            {
                "driver": d,
                "meaning": DRIVER_LABELS.get(d, d),
                "coefficient": coef.get(d, float("nan")),
                "planted_sd": sd,
                "group": group,
                "found": group_found.get(group, False),
            }
        )
    return pd.DataFrame(rows)


def _case_values(review: ShapReview | Explanations) -> pd.DataFrame:
    """Feature values per case: the features table's raw values when known, else the model inputs."""
    if isinstance(review, ShapReview) and len(review.raw_values):
        return review.raw_values
    expl = review.explanations if isinstance(review, ShapReview) else review
    return expl.values.groupby("case_id")[expl.feature_names].mean()


def _look_alikes(
    review: ShapReview | Explanations, importance: pd.DataFrame, groups: pd.DataFrame, top: int = 5
) -> pd.DataFrame:
    """For over-credited planted groups: each leading feature's most similar feature of an under-credited group."""
    planted = groups[groups["planted"]]
    over = planted[planted["shap_share"] > OVER_CREDIT * planted["planted_share"]]
    under = planted[planted["shap_share"] < planted["planted_share"]]
    if over.empty or under.empty:
        return pd.DataFrame(columns=LOOK_ALIKE_COLUMNS)
    values = _case_values(review)
    clinical = set(importance.loc[importance["family"] == "clinical", "source"])
    family_of = {str(c): feature_family(str(c), clinical)[0] for c in values.columns}
    rows = []
    for group in over.to_dict(orient="records"):
        leading = importance[importance["family"].isin(group["families"]) & (importance["mean_abs_shap"] > 0)]
        for feature in leading.head(top).to_dict(orient="records"):
            source = str(feature["source"])
            if source not in values.columns:
                continue
            best = _closest_look_alike(values, source, under, family_of)
            if best is not None:
                rows.append(
                    {
                        "group": group["group"],
                        "feature": source,
                        "mean_abs_shap": float(feature["mean_abs_shap"]),
                        "look_alike": best[1],
                        "look_alike_group": best[2],
                        "rho": best[0],
                    }
                )
    return pd.DataFrame(rows, columns=LOOK_ALIKE_COLUMNS)


def _closest_look_alike(
    values: pd.DataFrame, source: str, under: pd.DataFrame, family_of: Mapping[str, str]
) -> tuple[float, str, str] | None:
    """``(|Spearman rho|, feature, group)`` of the under-credited groups' feature most like ``source``."""
    best: tuple[float, str, str] | None = None
    for other in under.to_dict(orient="records"):
        candidates = [c for c, fam in family_of.items() if fam in other["families"] and c != source]
        if not candidates:
            continue
        ranks = values[[source, *candidates]].apply(pd.to_numeric, errors="coerce").rank()
        rho = ranks[candidates].corrwith(ranks[source]).abs().dropna()
        if len(rho) and (best is None or float(rho.max()) > best[0]):
            best = (float(rho.max()), str(rho.idxmax()), str(other["group"]))
    return best


def _truth_verdict(check: TruthCheck, min_share: float) -> str:
    """The verdict in plain words (Markdown): headline, groups, misses, order and over-credited groups."""
    g = check.groups
    planted, unplanted = g[g["planted"]], g[~g["planted"]]
    by_planted = planted.sort_values("planted_sd", ascending=False, kind="stable")["group"].tolist()
    by_model = planted.sort_values("shap_rank")["group"].tolist()
    missed = check.drivers[~check.drivers["found"]]
    lines = [_headline(check, unplanted)]
    describe = "; ".join(
        f"{r['group']}: {', '.join(r['drivers'])} ({r['shap_share']:.0%} of the SHAP)"
        for r in planted.to_dict(orient="records")
    )
    lines.append(
        f"The planted drivers map to {len(planted)} signal group(s) ({describe}), together "
        f"{planted['shap_share'].sum():.0%} of the family-level SHAP."
    )
    lines.append(_unplanted_line(check, planted, unplanted))
    if len(missed):
        lines.append(
            "Not found (rank below an unplanted family or under "
            f"{min_share:.0%} of the SHAP): " + ", ".join(str(m) for m in missed["meaning"]) + "."
        )
    order = "matches" if check.order_matches else "differs from"
    lines.append(
        f"By planted strength the groups order {' > '.join(by_planted)}; the model's order "
        f"({' > '.join(by_model)}) {order} it."
    )
    over = planted[planted["shap_share"] > OVER_CREDIT * planted["planted_share"]]
    lines += [_over_credit_line(r, check.look_alikes) for r in over.to_dict(orient="records")]
    lines.append(
        "Size and margin irregularity both live in shape features, so the family view cannot tell them apart; "
        "the top feature of each group is in the table."
    )
    return " ".join(lines)


def _headline(check: TruthCheck, unplanted: pd.DataFrame) -> str:
    if check.passed:
        if check.order_matches:
            return "**The model found the planted signal.**"
        return "**The model found the planted signal, but weighs it differently from the truth.**"
    if len(unplanted) and int(unplanted["shap_rank"].min()) == 1:
        return "**The model did not find the planted signal: it leans on something else.**"
    return "**The model found only part of the planted signal.**"


def _unplanted_line(check: TruthCheck, planted: pd.DataFrame, unplanted: pd.DataFrame) -> str:
    """Where the families without a planted driver rank."""
    if not len(unplanted):
        return "Every family in the model can carry a planted driver, so the check rests on each group's share."
    ranks = ", ".join(
        f"{r['group']} (rank {r['shap_rank']}, {r['shap_share']:.0%})" for r in unplanted.to_dict(orient="records")
    )
    below = check.passed or int(unplanted["shap_rank"].min()) > int(planted["shap_rank"].max())
    tail = "; every planted group ranks above them." if below else "; some rank above a planted group."
    return "Families without a planted driver: " + ranks + tail


def _over_credit_line(group: Mapping[Hashable, Any], hints: pd.DataFrame) -> str:
    """One over-credited planted group, and whether look-alike features explain its extra credit."""
    text = (
        f"{group['group']} holds {group['shap_share']:.0%} of the SHAP against {group['planted_share']:.0%} of the "
        "planted signal"
    )
    mine = hints[hints["group"] == group["group"]] if len(hints) else hints
    alike = mine[mine["rho"] >= 0.5] if len(mine) else mine
    if len(alike):
        example = alike.sort_values("rho", ascending=False).iloc[0]
        share = float(alike["mean_abs_shap"].sum() / max(float(mine["mean_abs_shap"].sum()), 1e-12))
        text += (
            f"; {len(alike)} of its {len(mine)} leading features track features of "
            f"{', '.join(sorted(set(alike['look_alike_group'])))} (|Spearman rho| >= 0.5, e.g. "
            f"`{short_name(str(example['feature']))}` and `{short_name(str(example['look_alike']))}`, rho "
            f"{float(example['rho']):.2f}) and hold {share:.0%} of their SHAP: part of this credit is likely "
            "that group's signal seen through look-alike features."
        )
    else:
        text += (
            "; none of its leading features resembles a feature of an under-credited group, so it may carry "
            "something other than the planted signal."
        )
    return text[0].upper() + text[1:]
