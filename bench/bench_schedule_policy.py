"""Images/s of SchedulePolicy's three paths at 32x32, beside torchvision's AutoAugment (the per-image baseline).

    python bench/bench_schedule_policy.py [--batch 256] [--batches 8] [--smoke]

Rows, all on real-looking uint8 32x32 images (the generated shapes10 set), one process, one schedule entry with
every probability 0.5 and mid-range magnitudes (K ~ {0, 1, 2} ops per image as PBA):
    pil          policy(PIL image) per image (what a DataLoader worker does; multiply by workers)
    tv-autoaug   torchvision.transforms.AutoAugment(CIFAR10) per PIL image (same role, fixed policy)
    batch        policy.batch(uint8 (B, 3, H, W)) on the CPU (and on CUDA when present: static, no host sync)
    dali         policy.dali(images) in a DALI pipeline (CPU operators; GPU operators when present)
Output: a table, and one JSON line per row appended to bench/results/schedule_policy.jsonl (device, versions,
git sha); --smoke runs every path at tiny sizes and writes nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's hba_fast, installed or not

from hba_fast.augment.ops import OPS  # noqa: E402
from hba_fast.augment.space import NUM_OPS, NUM_SLOTS  # noqa: E402
from hba_fast.data.shapes10 import make_shapes10  # noqa: E402
from hba_fast.run.environment import environment  # noqa: E402
from hba_fast.schedule.policy import SchedulePolicy  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "schedule_policy.jsonl"


def _policy() -> SchedulePolicy:
    probs = np.full((1, NUM_SLOTS), 0.5, np.float32)
    mags = np.array([[(OPS[j % NUM_OPS].lo + OPS[j % NUM_OPS].hi) / 2 if OPS[j % NUM_OPS].has_magnitude else 0.0
                      for j in range(NUM_SLOTS)]], np.float32)
    return SchedulePolicy.from_arrays(probs, mags, seed=0)


def _time(fn, n_images: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    batch, batches = (8, 1) if args.smoke else (args.batch, args.batches)
    data = _images(batch)
    policy, rows = _policy(), []
    from PIL import Image

    pil = [Image.fromarray(x) for x in data]
    rows.append(("pil", "cpu", _time(lambda: [policy(x) for x in pil], len(pil))))
    try:
        import torchvision.transforms as T

        aa = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
        rows.append(("tv-autoaug", "cpu", _time(lambda: [aa(x) for x in pil], len(pil))))
    except ImportError:
        print("torchvision not installed: no AutoAugment baseline")
    x = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    rows.append(("batch", "cpu", _time(lambda: [policy.batch(x) for _ in range(batches)], batch * batches)))
    if torch.cuda.is_available():
        xc = x.cuda()

        def gpu():
            for _ in range(batches):
                policy.batch(xc)
            torch.cuda.synchronize()

        rows.append(("batch", torch.cuda.get_device_name(), _time(gpu, batch * batches)))
    rows.extend(_dali(policy, data, batches))
    print(f"{'path':12s} {'device':28s} {'images/s':>12s}")
    for path, device, ips in rows:
        print(f"{path:12s} {device:28s} {ips:12.0f}")
    if args.smoke:
        print("smoke run: nothing written")
        return
    env = environment("cpu")  # the package's one helper; the rows name their device themselves
    info = {"torch": env["torch"], "python": env["python"], "cpu": platform.processor(), "git_sha": env["git_sha"],
            "git_dirty": env["git_dirty"], "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "batch": batch}
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "a") as f:
        for path, device, ips in rows:
            f.write(json.dumps({"path": path, "device": device, "images_per_s": round(ips, 1), **info}) + "\n")
    print(f"appended {len(rows)} rows to {RESULTS}")


def _images(n: int) -> np.ndarray:
    """n real-looking 32x32 uint8 images (HWC) from the generated shapes10 set."""
    return np.ascontiguousarray(make_shapes10(n, size=32, seed=0)[0].permute(0, 2, 3, 1).numpy())


def _dali(policy: SchedulePolicy, data: np.ndarray, batches: int) -> list[tuple[str, str, float]]:
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        print("DALI not installed: no DALI row")
        return []
    rows = []
    for device in ["cpu"] + (["gpu"] if torch.cuda.is_available() else []):
        @pipeline_def(batch_size=len(data), num_threads=2, device_id=0 if device == "gpu" else None,
                      enable_conditionals=True, seed=0)
        def pipe(on_gpu: bool = device == "gpu"):
            img = fn.external_source(source=lambda: list(data), batch=True, layout="HWC", dtype=types.UINT8)
            return policy.dali(img.gpu() if on_gpu else img)

        p = pipe()
        p.build()
        rows.append(("dali", device, _time(lambda p=p: [p.run() for _ in range(batches)], len(data) * batches)))
    return rows


if __name__ == "__main__":
    main()
