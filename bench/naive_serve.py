"""The naive anchor of the serving benchmark: the FastAPI endpoint anyone would write first around
the same model version, with nothing of the service (no auth, no audit, no metrics, no middleware).
One validate + collate + forward per request, in FastAPI's thread pool; it answers probabilities.

    FLAME_HOME=/tmp/x python bench/naive_serve.py --port 8001 [--version v1] [--device cpu]

(--device defaults to FLAME_DEVICE, else cpu.)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from fastapi import Body, FastAPI, HTTPException

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_core.collate import collate  # noqa: E402
from flame_core.heads import predict_outputs  # noqa: E402
from flame_core.validation import SampleInvalid, validate_sample  # noqa: E402


def load(version: str | None, device: str):  # type: ignore[no-untyped-def]
    """The version (default: the one `active` points at) from the registry in FLAME_HOME."""
    from service.artifacts import LocalArtifactStore
    from service.db import make_engine, make_session_factory
    from service.registry.lineage import get_version
    from service.registry.versions import resolve_alias
    from service.settings import get_settings
    from service.versioning import load_version

    settings = get_settings()
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        row = get_version(session=session, version=version) if version else resolve_alias(session=session)
        cl = load_version(LocalArtifactStore(settings.artifact_root), row, device=device)
    engine.dispose()
    return cl


def build_app(cl, device: str) -> FastAPI:  # type: ignore[no-untyped-def]
    app = FastAPI()
    specs, tokenizer = cl.specs, cl.config.tokenizer()
    models = {c: cl.cursor_model(c).eval() for c in sorted(set(cl.cursor.values()))}

    @app.post("/predict/{task}")
    def predict(task: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        if task not in specs.tasks:
            raise HTTPException(404, f"unknown task {task!r}")
        try:
            sample = validate_sample(body, specs, [task])
        except SampleInvalid as e:
            raise HTTPException(422, str(e)) from None
        batch = collate([sample], specs, tasks=[task], tokenizer=tokenizer).to(device)
        with torch.inference_mode():
            out = models[cl.cursor[task]](batch, [task])
        value = predict_outputs(specs.tasks[task].head, out.outputs[task]).cpu()[0]
        return {"task": task, "output": value.tolist()}

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default=None, help="default: the active version")
    parser.add_argument("--device", default=os.environ.get("FLAME_DEVICE", "cpu"))
    args = parser.parse_args()
    app = build_app(load(args.version, args.device), args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
