"""How the `auto` rank's energy target and the refit after truncation trade parameters for accuracy.

    python bench/continual_energy.py --streams digits-views --energies 0.9,0.95,0.99 --refit 0,3

One stage 0 per stream, shared by every run. Per (energy, refit epochs): FLAME's parameters per later
stage against LoRA's (r=32), each new task's score drop at truncation and after the refit, and the
final average. Prints one markdown table per stream.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from continual import STREAMS, pretrain  # noqa: E402

from flame_core.report import markdown_table  # noqa: E402
from flame_core.strategies import build_strategy  # noqa: E402
from flame_core.stream import StreamResult, run_stream  # noqa: E402


def drops(res: StreamResult, after: list[dict[str, float]]) -> float:
    return max(res.before_end[i][t] - after[i][t] for i in range(1, len(res.stages)) for t in res.stages[i])


def sweep(key: str, energies: list[float], refits: list[int], args) -> str:  # type: ignore[no-untyped-def]
    stream = STREAMS[key][1]
    data, stages, cfg, pretrained, _ = pretrain(key, args)
    lora = run_stream(build_strategy("lora", rank=32), data, stages, train_config=cfg, pretrained=pretrained)
    lora_params = lora.summary()["stage_params_mean"]
    lora_stages = lora.stage_params[1:]
    rows = [
        [
            "lora r=32",
            "-",
            "-",
            f"{lora_params / 1e3:.1f}k",
            1.0,
            1.0,
            0.0,
            0.0,
            lora.summary()["final_average"],
            "-",
        ]
    ]
    for energy in energies:
        for refit in refits:
            t0 = time.perf_counter()
            strategy = build_strategy("flame", rank="auto", energy=energy, refit_epochs=refit)
            res = run_stream(strategy, data, stages, train_config=cfg, pretrained=pretrained)
            s = res.summary()
            mean_rank = sum(i.get("mean_rank", 0.0) for i in res.info[1:]) / (len(stages) - 1)
            rows.append(
                [
                    "flame",
                    energy,
                    refit,
                    f"{s['stage_params_mean'] / 1e3:.1f}k",
                    s["stage_params_mean"] / lora_params,
                    max(f / lo for f, lo in zip(res.stage_params[1:], lora_stages, strict=True)),
                    drops(res, res.at_truncation),
                    drops(res, res.matrix),
                    s["final_average"],
                    f"{mean_rank:.1f}",
                ]
            )
            print(
                f"  {key} energy={energy} refit={refit}: {rows[-1]} ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    headers = [
        "strategy",
        "energy",
        "refit epochs",
        "params per later stage (mean)",
        "ratio to lora",
        "(worst stage)",
        "max drop at truncation",
        "max drop after refit",
        "final avg",
        "mean rank",
    ]
    return f"### {key}: `{stream}`\n\n" + markdown_table(headers, rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="digits-views")
    ap.add_argument("--energies", default="0.9,0.95,0.99")
    ap.add_argument("--refit", default="0,3")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    energies = [float(e) for e in args.energies.split(",")]
    refits = [int(r) for r in args.refit.split(",")]
    for key in args.streams.split(","):
        print(sweep(key, energies, refits, args), flush=True)


if __name__ == "__main__":
    main()
