"""synthetic-icu: ICU stays generated from shared latent causes, with known true risks.

Each patient has five latent factors z ~ N(0, I): severity, cardiac, renal, infection, respiratory.
Every modality is a redundant, low-noise view of all of z, so the true risk (a function of z) stays
identifiable from whichever modalities a sample has; tasks are hard only through label noise
(Bernoulli/categorical draws from moderate probabilities). That makes `achievable` (the AUROC of the
true probabilities on the test split) a ceiling that a good model can approach.

Values are on a standardised scale (z-score-like), as a preprocessed EHR extract would be.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flame_core.benchmarks.base import BenchmarkData, split_indices, to_list
from flame_core.metrics import task_metrics
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec

FACTORS = ("severity", "cardiac", "renal", "infection", "respiratory")
VITALS = ("heart_rate", "mean_bp", "resp_rate", "temperature", "spo2", "urine_output")
VITAL_LOAD = np.array(
    [  # (D=6, K=5): level of each vital per unit of each factor
        [0.3, 0.9, 0.0, 0.3, 0.1],
        [-0.9, -0.3, 0.2, -0.2, 0.0],
        [0.2, 0.1, 0.0, 0.2, 0.9],
        [0.1, 0.0, 0.0, 0.9, 0.1],
        [-0.5, -0.1, 0.0, 0.0, -0.7],
        [-0.3, -0.2, -0.9, 0.0, 0.0],
    ]
)
LABS = (
    "lactate",
    "creatinine",
    "bun",
    "wbc",
    "crp",
    "troponin",
    "bnp",
    "bilirubin",
    "hemoglobin",
    "platelets",
    "pco2",
    "pf_ratio",
)
LAB_LOAD = np.array(
    [  # (D=12, K=5)
        [0.9, 0.3, 0.2, 0.3, 0.2],
        [0.2, 0.1, 1.0, 0.0, 0.0],
        [0.3, 0.2, 0.9, 0.0, 0.0],
        [0.2, 0.0, 0.0, 1.0, 0.1],
        [0.1, 0.0, 0.0, 0.9, 0.3],
        [0.3, 0.9, 0.1, 0.0, 0.0],
        [0.2, 0.9, 0.3, 0.0, 0.1],
        [0.8, 0.0, 0.2, 0.3, 0.0],
        [-0.7, -0.2, -0.3, 0.0, 0.0],
        [-0.6, 0.0, 0.0, -0.5, 0.0],
        [0.2, 0.0, 0.0, 0.0, 0.9],
        [-0.3, -0.1, 0.0, -0.2, -1.0],
    ]
)
CXR_DIM = 32
CXR_LOAD = np.random.default_rng(20240611).normal(0.0, 0.5, size=(CXR_DIM, len(FACTORS)))
# One graded sentence per factor: the word is chosen by the bin of (z_k + small noise).
GRADE_EDGES = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
NOTE_GRADES = {
    "severity": (
        ("Overall the patient appears {}.", "Patient looks {} today."),
        ("robust", "comfortable", "settled", "tired", "unwell", "frail", "toxic", "moribund"),
    ),
    "cardiac": (
        ("Cardiac exam notable for {}.", "Heart: {}."),
        (
            "quietness",
            "regularity",
            "murmur",
            "palpitations",
            "tachycardia",
            "gallop",
            "edema",
            "cardiogenic",
        ),
    ),
    "renal": (
        ("Renal function {}.", "Kidneys {}."),
        ("excellent", "preserved", "adequate", "borderline", "declining", "impaired", "failing", "anuric"),
    ),
    "infection": (
        ("Infectious workup {}.", "Cultures {}."),
        (
            "negative",
            "unremarkable",
            "equivocal",
            "suggestive",
            "positive",
            "bacteremic",
            "septic",
            "fulminant",
        ),
    ),
    "respiratory": (
        ("Breathing is {}.", "Respirations {}."),
        ("effortless", "easy", "unlabored", "shallow", "labored", "distressed", "hypoxic", "intubated"),
    ),
}
FILLER = (
    "Family at bedside.",
    "Diet as tolerated.",
    "Pain controlled with acetaminophen.",
    "Lines and drains reviewed.",
    "Plan discussed with the team.",
    "Skin intact.",
    "Will reassess in the morning.",
    "Code status confirmed.",
    "Ambulating with assistance.",
    "Medications reconciled.",
    "Social work consulted.",
    "Physical therapy following.",
)
MISSING_P = {"vitals": 0.15, "labs": 0.2, "notes": 0.25, "cxr": 0.3}
PHENOTYPES = (  # name, factor a, weight a, factor b, weight b, prevalence
    ("sepsis", 3, 1.6, 0, 0.8, 0.30),
    ("septic_shock", 3, 1.4, 0, 1.4, 0.10),
    ("aki", 2, 1.6, 0, 0.6, 0.25),
    ("ckd", 2, 1.8, 1, 0.4, 0.15),
    ("chf", 1, 1.8, 2, 0.6, 0.20),
    ("arrhythmia", 1, 1.4, 0, 0.5, 0.25),
    ("acs", 1, 1.6, 0, 0.8, 0.09),
    ("copd", 4, 1.6, 1, 0.4, 0.20),
    ("ards", 4, 1.8, 3, 0.8, 0.08),
    ("pneumonia", 4, 1.2, 3, 1.2, 0.25),
    ("diabetes", 2, 0.9, 1, 0.9, 0.35),
    ("hypertension", 1, 1.0, 2, 1.0, 0.40),
    ("liver_disease", 0, 1.4, 2, 0.6, 0.10),
    ("gi_bleed", 0, 1.4, 1, -0.6, 0.07),
    ("delirium", 0, 1.3, 3, 0.8, 0.20),
    ("coagulopathy", 0, 1.2, 3, 1.0, 0.12),
    ("anemia", 0, 1.0, 2, 1.0, 0.30),
    ("electrolytes", 2, 1.4, 0, 0.6, 0.30),
    ("shock", 0, 1.8, 1, 0.8, 0.10),
    ("resp_failure", 4, 1.6, 0, 1.0, 0.15),
    ("uti", 3, 1.3, 2, 0.5, 0.12),
    ("cardiac_arrest", 1, 1.6, 0, 1.4, 0.06),
    ("fluid_overload", 1, 1.2, 2, 1.2, 0.15),
    ("hypotension", 0, 1.0, 1, 1.2, 0.25),
    ("malnutrition", 0, 1.2, 4, 0.6, 0.18),
)
ACUITY = ("low", "moderate", "high", "critical")
TASKS = {  # name -> (modalities, head)
    "mortality": (("vitals", "labs", "notes", "cxr"), HeadSpec("binary")),
    "los": (("vitals", "labs", "notes"), HeadSpec("binary")),
    "phenotype": (("labs", "notes", "cxr"), HeadSpec("multilabel", 25, tuple(p[0] for p in PHENOTYPES))),
    "acuity": (("vitals", "notes", "cxr"), HeadSpec("multiclass", 4, ACUITY)),
    "readmission": (("labs", "cxr"), HeadSpec("binary")),
}


def build_specs() -> SpecSet:
    modalities = {
        "vitals": ModalitySpec("vitals", "timeseries", dim=len(VITALS), max_len=64),
        "labs": ModalitySpec("labs", "tabular", dim=len(LABS)),
        "notes": ModalitySpec("notes", "text", max_len=2048),
        "cxr": ModalitySpec("cxr", "embedding", dim=CXR_DIM),
    }
    tasks = {name: TaskSpec(name, mods, head) for name, (mods, head) in TASKS.items()}
    return SpecSet(modalities=modalities, tasks=tasks)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def true_risks(z: np.ndarray) -> dict[str, np.ndarray]:
    """True probabilities per task from the latent factors z (N, 5); labels are drawn from these."""
    sev, card, ren, inf, resp = z.T
    risks = {
        "mortality": _sigmoid(-2.0 + 1.4 * sev + 0.6 * card + 0.5 * ren + 0.6 * inf + 0.4 * resp),
        "los": _sigmoid(-0.3 + 0.6 * sev + 0.2 * card + 0.5 * ren + 1.0 * inf + 0.9 * resp),
        "readmission": _sigmoid(-1.4 - 0.3 * sev + 1.3 * card + 1.2 * ren),
    }
    s = 1.3 * sev + 0.3 * inf + 0.8 * resp  # acuity score, adjacent-category model
    logits = np.stack([k * 1.2 * s + b for k, b in enumerate((0.0, 1.2, 1.0, -0.8))], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    risks["acuity"] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cols = []
    for _, a, wa, b, wb, prev in PHENOTYPES:
        scale = np.sqrt(1.0 + np.pi * (wa**2 + wb**2) / 8.0)  # probit approximation: mean risk ~ prev
        cols.append(_sigmoid(np.log(prev / (1 - prev)) * scale + wa * z[:, a] + wb * z[:, b]))
    risks["phenotype"] = np.stack(cols, axis=1)
    return risks


def _draw_labels(rng: np.random.Generator, risks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    labels = {t: (rng.random(p.shape) < p).astype(np.int64) for t, p in risks.items() if t != "acuity"}
    cum = np.cumsum(risks["acuity"], axis=1)
    labels["acuity"] = np.minimum((rng.random((len(cum), 1)) > cum).sum(axis=1), len(ACUITY) - 1)
    return labels


def _present_modalities(rng: np.random.Generator, n: int) -> np.ndarray:
    """(N, 4) bool: each modality absent with its own probability, repaired so that no task loses
    all of its modalities."""
    names = list(MISSING_P)
    present = rng.random((n, len(names))) >= np.array([MISSING_P[m] for m in names])
    for mods, _ in TASKS.values():
        cols = [names.index(m) for m in mods]
        empty = np.flatnonzero(~present[:, cols].any(axis=1))
        present[empty, np.array(cols)[rng.integers(0, len(cols), len(empty))]] = True
    return present


def _vitals(rng: np.random.Generator, z: np.ndarray) -> dict[str, Any]:
    steps = int(np.clip(round(20 + 5 * z[0] + rng.normal(0, 6)), 8, 40))  # sicker: charted more often
    times = np.sort(rng.uniform(0.0, 48.0, steps))
    level = VITAL_LOAD @ z  # (D,)
    trend = VITAL_LOAD @ (z * np.array([0.6, 0.0, 0.0, 0.3, 0.0]))  # deterioration along each vital
    values = level + np.outer(times / 48.0 - 0.5, trend) + rng.normal(0, 0.3, (steps, len(VITALS)))  # (T, D)
    missing = rng.random(values.shape) < 0.3
    missing[np.arange(steps), rng.integers(0, len(VITALS), steps)] = False  # every row keeps one value
    values[missing] = np.nan
    return {"times": to_list(times, 2), "values": to_list(values, 3)}


def _labs(rng: np.random.Generator, z: np.ndarray) -> dict[str, Any]:
    values = LAB_LOAD @ z + rng.normal(0, 0.2, len(LABS))
    values[rng.random(len(LABS)) < 0.2] = np.nan
    return {"values": to_list(values, 3)}


def _notes(rng: np.random.Generator, z: np.ndarray) -> dict[str, Any]:
    grades = np.digitize(z + rng.normal(0, 0.15, len(z)), GRADE_EDGES)
    sentences = [
        templates[rng.integers(len(templates))].format(words[g])
        for (templates, words), g in zip(NOTE_GRADES.values(), grades, strict=True)
    ]
    sentences += [FILLER[i] for i in rng.choice(len(FILLER), rng.integers(2, 5), replace=False)]
    return {"text": " ".join(sentences[i] for i in rng.permutation(len(sentences)))}


def _cxr(rng: np.random.Generator, z: np.ndarray) -> dict[str, Any]:
    return {"embedding": to_list(CXR_LOAD @ z + rng.normal(0, 0.35, CXR_DIM), 3)}


def _label_value(task: str, labels: dict[str, np.ndarray], i: int) -> Any:
    if task == "readmission" and labels["mortality"][i] == 1:
        return None  # no readmission label for patients who die in hospital
    value = labels[task][i]
    return [int(v) for v in value] if task == "phenotype" else int(value)


def generate(seed: int = 0, n: int | None = None) -> BenchmarkData:
    """`n` patients (default 5,000), deterministic in `seed`, split 60/20/20."""
    n = 5000 if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 10:
        raise ValueError(f"synthetic-icu needs n >= 10 patients, got n={n!r}")
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(FACTORS)))  # (N, K) latent causes
    risks = true_risks(z)
    labels = _draw_labels(rng, risks)
    present = _present_modalities(rng, n)
    makers = {"vitals": _vitals, "labs": _labs, "notes": _notes, "cxr": _cxr}
    samples = []
    for i in range(n):
        mods = {m: makers[m](rng, z[i]) for j, m in enumerate(MISSING_P) if present[i, j]}
        task_labels = {t: _label_value(t, labels, i) for t in TASKS}
        samples.append({"id": f"icu-{i:05d}", "modalities": mods, "labels": task_labels})
    idx = split_indices(n, seed)
    specs = build_specs()
    test = idx["test"]
    achievable = {}
    for task, (_, head) in TASKS.items():
        keep = test if task != "readmission" else test[labels["mortality"][test] == 0]
        achievable[task] = task_metrics(head, risks[task][keep], labels[task][keep])["auroc"]
    return BenchmarkData(
        name="synthetic-icu",
        specs=specs,
        splits={s: [samples[i] for i in ix] for s, ix in idx.items()},
        achievable=achievable,
        primary_metric={t: "auroc" for t in TASKS},
        description=(
            f"Synthetic ICU stays (n={n}, seed={seed}) from 5 latent factors {FACTORS}: irregular vitals "
            f"{VITALS} over 48 h (30% values missing), 12 labs (20% missing), graded clinical notes, a "
            "32-d chest X-ray embedding; whole modalities missing per sample (15-30%), never all of a "
            "task's. readmission is unlabelled (None) for in-hospital deaths. Values are standardised."
        ),
    )
