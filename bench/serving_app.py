"""The real service plus two benchmark-only routes, served the way `flame serve` serves it (uvicorn,
one worker, no access log): the serving benchmark's server process.

    FLAME_HOME=/tmp/x python bench/serving_app.py --port 8000

`POST /bench/empty/{task}` reads the body, parses it with `service.limits.parse_json` (as
`/predict` does) and returns a constant; `POST /bench/empty-auth/{task}` does the same behind the
`predict` scope check. Both sit behind the app's own middleware, so against `POST /predict/{task}`
on the same process they measure the HTTP stack's ceiling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fastapi import Depends, Request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from service.cli.serve import UVICORN_OPTIONS  # noqa: E402
from service.deps import require_scope  # noqa: E402
from service.limits import parse_json  # noqa: E402
from service.settings import get_settings  # noqa: E402

CONSTANT = {"ok": True}


async def empty(task: str, request: Request) -> dict[str, Any]:
    parse_json(await request.body())
    return CONSTANT


PredictKey = Depends(require_scope("predict"))


async def empty_auth(task: str, request: Request, _: Any = PredictKey) -> dict[str, Any]:
    parse_json(await request.body())
    return CONSTANT


def build_app():  # type: ignore[no-untyped-def]
    app = create_app(get_settings())
    app.add_api_route("/bench/empty/{task}", empty, methods=["POST"], include_in_schema=False)
    app.add_api_route("/bench/empty-auth/{task}", empty_auth, methods=["POST"], include_in_schema=False)
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    if args.workers > 1:  # each worker process builds its own app (and batcher), as `flame serve --workers`
        target = "bench.serving_app:build_app"
        opts = {"factory": True, "workers": args.workers}
        uvicorn.run(target, host=args.host, port=args.port, log_level="warning", **opts, **UVICORN_OPTIONS)
        return
    uvicorn.run(build_app(), host=args.host, port=args.port, log_level="warning", **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
