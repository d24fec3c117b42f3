"""FLAME: a sparse mixture-of-experts for flexi-modal, multi-task, continual learning (pure PyTorch).

Modules are named for the paper's nouns: `specs` (modalities, tasks), `validation`, `collate`,
`encoders`, `routing`, `experts`, `model`, `losses`, `training`, `metrics`, `checkpoint`,
`benchmarks`. Nothing here imports a web, database or queue library.
"""

__version__ = "0.1.0"
