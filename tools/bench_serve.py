"""``make bench-serve``: drive a real server over HTTP at several concurrencies, next to the raw model.

The raw figure is the same work done in-process (decode, preprocess, model, postprocess) on the same images,
measured in the same run before the server starts, so the table reads as "what HTTP and batching cost".
Writes <out>.json, <out>.md and <out>.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bench.stats import summarize, time_calls  # noqa: E402
from compress.runtime import load_runner  # noqa: E402
from serve.images import decode_image  # noqa: E402
from serve.process import server_process  # noqa: E402


def raw_latency(model: str, images: list[bytes], runs: int, threads: int | None) -> dict:
    runner = load_runner(model, "onnxruntime", threads=threads)
    state = {"i": 0}

    def one():
        data = images[state["i"] % len(images)]
        state["i"] += 1
        image = decode_image(data, "x", 10 * 2**20, 40_000_000, 4)
        return runner.detect([image])[0].filtered(0.3, 100)

    return time_calls(one, runs=runs, warmup=10)


async def drive(url: str, images: list[bytes], requests: int, concurrency: int) -> dict:
    import httpx

    latencies, statuses = [], []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for _ in range(concurrency):  # open the connections before timing
            await client.get(url + "/healthz")

        async def worker():
            while not queue.empty():
                i = queue.get_nowait()
                start = time.perf_counter()
                try:
                    res = await client.post(url + "/detect",
                                            files={"file": (f"{i}.png", images[i % len(images)], "image/png")})
                    statuses.append(res.status_code)
                except httpx.HTTPError:
                    statuses.append(0)
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, **summarize(latencies, wall_s=wall),
            "errors": sum(1 for s in statuses if s != 200)}


def write_reports(result: dict, out: Path) -> str:
    raw = result["raw_end_to_end"]
    lines = [f"Server vs raw model, {result['model']} ({result['machine']})", "",
             "| load | p50 ms | p90 ms | p99 ms | throughput img/s | errors |", "|---|---|---|---|---|---|",
             f"| raw model in-process (sequential) | {raw['p50_ms']} | {raw['p90_ms']} | {raw['p99_ms']} | "
             f"{raw['throughput_per_s']} | - |"]
    for row in result["server"]:
        lines.append(f"| server, concurrency {row['concurrency']} | {row['p50_ms']} | {row['p90_ms']} | "
                     f"{row['p99_ms']} | {row['throughput_per_s']} | {row['errors']} |")
    lines += ["", *(f"- {name}: {'met' if ok else 'MISSED'} ({detail})" for name, ok, detail in result["targets"])]
    table = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    levels = [str(r["concurrency"]) for r in result["server"]]
    left.bar([f"c={c}" for c in levels], [r["p50_ms"] for r in result["server"]], label="server p50")
    left.scatter([f"c={c}" for c in levels], [r["p99_ms"] for r in result["server"]], color="k", label="server p99",
                 zorder=3)
    left.axhline(raw["p50_ms"], color="r", linestyle="--", label="raw model p50")
    left.set_ylabel("latency (ms)")
    left.legend()
    right.plot(levels, [r["throughput_per_s"] for r in result["server"]], marker="o", label="server")
    right.axhline(raw["throughput_per_s"], color="r", linestyle="--", label="raw model, sequential")
    right.set_xlabel("concurrency")
    right.set_ylabel("images / s")
    right.legend()
    fig.suptitle("POST /detect under load")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="work_dirs/export/student.onnx")
    parser.add_argument("--images", default="data/synthetic/val", help="folder of images to send")
    parser.add_argument("--url", default=None, help="an already running server (default: start one)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--raw-runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="model threads (default: all cores)")
    parser.add_argument("--out", default="work_dirs/bench/serve")
    args = parser.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"error: no model at {args.model}; `make export` writes it", file=sys.stderr)
        return 2
    images = [p.read_bytes() for p in sorted(Path(args.images).glob("*.png"))[:32]]
    if not images:
        print(f"error: no .png images in {args.images}; `make data` writes the synthetic val split", file=sys.stderr)
        return 2
    print(f"raw model, in-process: {args.raw_runs} runs ...", flush=True)
    raw = raw_latency(args.model, images, args.raw_runs, args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    settings = {"threads": args.threads} if args.threads else {}

    def run_levels(url: str) -> None:
        for c in args.concurrency:
            print(f"server, concurrency {c}: {args.requests} requests ...", flush=True)
            rows.append(asyncio.run(drive(url, images, args.requests, c)))

    if args.url:
        run_levels(args.url)
    else:
        with server_process(args.model, out.with_suffix(".server.log"), **settings) as url:
            run_levels(url)
    by_c = {r["concurrency"]: r for r in rows}
    targets = [("zero errors", all(r["errors"] == 0 for r in rows), f"{sum(r['errors'] for r in rows)} errors")]
    if 1 in by_c:
        ratio = by_c[1]["p50_ms"] / raw["p50_ms"]
        targets.append(("server p50 at concurrency 1 within 1.15x of the raw model", ratio <= 1.15, f"{ratio:.2f}x"))
    if 1 in by_c and 16 in by_c:
        gain = by_c[16]["throughput_per_s"] / by_c[1]["throughput_per_s"]
        targets.append(("throughput at 16 >= at 1", gain >= 1.0, f"{gain:.2f}x"))
    import onnxruntime

    result = {"model": args.model, "machine": f"{platform.processor() or platform.machine()}, "
                                              f"{__import__('os').cpu_count()} cores",
              "onnxruntime": onnxruntime.__version__, "threads": args.threads, "raw_end_to_end": raw,
              "server": rows, "targets": targets, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(write_reports(result, out))
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
