"""Augmentation throughput side by side: our torch policy (static form, also inside a CUDA graph, and the indexed
form), DALI (ours), Pillow on all cores (PBA's way), torchvision RandAugment and DALI's own
`auto_aug.trivial_augment_wide`, in one run; and the policy's cost against a WRN-40-2 training step.

Workloads (--workloads, default all)
  policy32   the PBA policy (K ~ {0,1,2}, per-sample ops and continuous magnitudes) on 32x32 images, batch 128..1024:
             `apply_policy` (sampling + applying) on the device in the static form (on CUDA its Triton kernels,
             eager and replayed from a CUDA graph, and its torch passes) and the indexed form; DALI and Pillow
             take uint8 batches from host memory.
  policy224  the same torch policy on 224x224 tensors (batch 32, and 256 on a GPU): ImageNet-sized images.
  imagenet   the ImageNet recipe at 224x224 from JPEG files (a shapes10 class-folder tree at 500x375, written
             here): decode, random-resized-crop, policy, flip, colour jitter, lighting, standardise, with DALI
             (ours and trivial_augment_wide) and Pillow / torchvision pools. Needs DALI: skipped without it.
  model      a WRN-40-2 search step (first_bn, batch 128, 32x32) and a ResNet-50 step (batch 256, 224x224),
             forward + backward + SGD, bf16 autocast, cudnn.benchmark; then the target rows: the policy's time
             over a WRN-40-2 step at batch 128 (issue 12: under 5%), per form.
DALI is optional: without it every DALI row is skipped with a note, the rest runs.

Output: a table on stdout and one JSON line per measurement appended to --out (default
bench/results/pipeline.jsonl) with the device name, versions and git sha (`HBA_GIT_SHA` on a copy without .git);
target rows carry `metric`, `value`, `goal`, `cmp` (read by bench/summarize.py). GPU timings use CUDA events
around `iters` steps after `warmup` steps; CPU timings and the pools use wall-clock. `aten_ops` counts the
operator calls of one policy call (the kernel launches it costs on a GPU, device-independent). Without CUDA the
script refuses, except `--smoke`, which runs every code path at tiny sizes on the CPU (a wrn-16-2 step stands in
for the models) and writes only where --out names a file (rows marked "smoke": true, no measurements of anything).

    python bench/bench_pipeline.py                                        # on a GPU machine, everything
    python bench/bench_pipeline.py --workloads policy32 policy224 model --batches 128 --out $OUT/results.jsonl
    python bench/bench_pipeline.py --cpu --workloads policy32 policy224 --batches 64 128   # the forms on a CPU
    python bench/bench_pipeline.py --smoke                                # code-path check anywhere
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import types as pytypes
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from targets import goal  # bench/targets.py: issue 12's goals

from hba_fast.augment.ops import OPS
from hba_fast.run.environment import environment as hba_environment
from hba_fast.schedule.file import Schedule
from hba_fast.schedule.sampler import ScheduleSampler

RESULTS = ROOT / "bench" / "results" / "pipeline.jsonl"
WORKLOADS = ("policy32", "policy224", "imagenet", "model")
PROB, MAG_FRAC = 0.3, 0.5  # the benchmarked policy: every slot at p = 0.3, magnitude mid-range
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def policy_tensors(device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.full((30,), PROB, device=device)
    mags = torch.tensor([o.lo + MAG_FRAC * (o.hi - o.lo) for o in OPS] * 2, device=device)
    return probs, mags


def fixed_sampler() -> ScheduleSampler:
    """The benchmarked policy as a pipeline sampler (no lambda): a one-entry schedule, for any number of epochs."""
    probs, mags = policy_tensors()
    return ScheduleSampler(Schedule(probs[None], mags[None]), 1)


def environment() -> dict:
    """This script's environment keys, from the package's one helper (hba_fast.run.environment)."""
    import PIL

    env = hba_environment()
    return {"torch": env["torch"], "pillow": PIL.__version__, "python": env["python"], "cpus": env["cpus"],
            "host": env["hostname"], "dali": env["dali"], "torchvision": env["torchvision"],
            "device": env.get("gpu") or "cpu", "torch_threads": env["cpu_threads"], "git_sha": env["git_sha"],
            "git_dirty": env["git_dirty"]}


def sync(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


def run_synced(pipe, gpu: bool) -> None:
    """One DALI iteration, its GPU work finished (wall-clock timing of DALI's own streams)."""
    pipe.run()
    sync(gpu)


def time_steps(step, iters: int, warmup: int, gpu: bool) -> float:
    """Seconds per step: CUDA events on the GPU (after a sync), wall-clock otherwise."""
    for _ in range(warmup):
        step()
    sync(gpu)
    if gpu:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters


# ---------------------------------------------------------------- Pillow on all cores (PBA's way)


def _pil_op(im, name: str, m: float):
    from PIL import Image, ImageEnhance, ImageOps

    w, h = im.size
    affine = {"ShearX": (1, m, 0, 0, 1, 0), "ShearY": (1, 0, 0, m, 1, 0), "TranslateX": (1, 0, m * w, 0, 1, 0),
              "TranslateY": (1, 0, 0, 0, 1, m * h)}
    if name in affine:
        return im.transform(im.size, Image.Transform.AFFINE, affine[name], Image.Resampling.NEAREST,
                            fillcolor=(128, 128, 128))
    if name == "Rotate":
        return im.rotate(m, fillcolor=(128, 128, 128))
    if name in ("AutoContrast", "Invert", "Equalize"):
        no_mag = {"AutoContrast": ImageOps.autocontrast, "Invert": ImageOps.invert, "Equalize": ImageOps.equalize}
        return no_mag[name](im)
    if name == "Solarize":
        return ImageOps.solarize(im, 256 - m)
    if name == "Posterize":
        bits = 8 - round(m)
        return ImageOps.posterize(im, bits) if bits >= 1 else Image.new("RGB", im.size)
    if name == "Cutout":
        side = round(m * min(w, h))
        cy, cx = np.random.randint(h), np.random.randint(w)
        out = im.copy()
        out.paste((125, 122, 113), (cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side))
        return out
    return getattr(ImageEnhance, name)(im).enhance(m)


def _pil_policy(im, rng: np.random.Generator):
    from hba_fast.data.dali_readers import draw_policy

    probs, mags = (t.numpy()[None] for t in policy_tensors())
    draw = draw_policy(probs, mags, int(rng.integers(2**62)))
    for pos in range(2):
        if draw["ops"][0, pos] >= 0:
            im = _pil_op(im, OPS[draw["ops"][0, pos]].name, float(draw["mags"][0, pos]))
    return im


def _pil_chunk_32(args):
    from PIL import Image

    images, seed = args
    rng = np.random.default_rng(seed)
    out = [np.asarray(_pil_policy(Image.fromarray(img), rng)) for img in images]
    return np.stack(out)


def _tv_chunk_32(args):
    import torchvision.transforms as T
    from PIL import Image

    images, seed = args
    torch.manual_seed(seed)
    ra = T.RandAugment()
    return np.stack([np.asarray(ra(Image.fromarray(img))) for img in images])


def has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def _rrc_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            return x, y, x + cw, y + ch
    return 0, 0, w, h


def _pil_chunk_jpeg(args):
    """Decode, random-resized-crop, policy (or RandAugment), flip, colour jitter, lighting, standardise."""
    from PIL import Image, ImageEnhance

    files, size, seed, randaugment = args
    rng = np.random.default_rng(seed)
    ra = None
    if randaugment:
        import torchvision.transforms as T

        ra = T.RandAugment()
    out = np.empty((len(files), 3, size, size), np.float32)
    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        im = im.resize((size, size), Image.Resampling.BILINEAR, box=_rrc_box(*im.size, rng))
        im = ra(im) if ra is not None else _pil_policy(im, rng)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            im = enh(im).enhance(rng.uniform(0.6, 1.4))
        x = np.asarray(im, np.float32) / 255.0 + eigvec @ (rng.normal(0, 0.1, 3) * eigval)
        out[i] = ((x - MEAN) / STD).transpose(2, 0, 1)
    return out


def pool_throughput(pool, fn, chunks) -> float:
    """Images per second of `fn` mapped over `chunks` by the process pool."""
    t0 = time.perf_counter()
    n = sum(len(r) for r in pool.imap_unordered(fn, chunks))
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------- DALI pipelines


def dali_policy_pipe(images_hwc: np.ndarray, batch: int, dali_dev: str, threads: int, trivial: bool):
    """external_source uint8 batches (+ the PBA draw) -> policy (ours) or trivial_augment_wide (DALI's)."""
    from nvidia.dali import fn, pipeline_def, types

    from hba_fast.augment.dali_ops import affine_matrices, apply_op_by_index
    from hba_fast.data.dali_readers import draw_policy

    probs, mags = (t.numpy()[None].repeat(batch, 0) for t in policy_tensors())
    n = len(images_hwc) // batch
    batches = [list(images_hwc[i * batch:(i + 1) * batch]) for i in range(n)]
    state = {"i": 0}

    def source():
        draw = draw_policy(probs, mags, (0, state["i"]))
        b = batches[state["i"] % n]
        state["i"] += 1
        mats = affine_matrices(draw["ops"], draw["mags"], *images_hwc.shape[1:3])
        return [b, list(draw["ops"]), list(draw["mags"]), list(mats)]

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=0 if dali_dev == "gpu" else None, seed=0,
                  enable_conditionals=True)
    def pipe():
        img, ops, m, mats = fn.external_source(source=source, num_outputs=4, batch=True,
                                               layout=["HWC", "", "", ""],
                                               dtype=[types.UINT8, types.INT32, types.FLOAT, types.FLOAT])
        img = img.gpu() if dali_dev == "gpu" else img
        if trivial:
            from nvidia.dali.auto_aug import trivial_augment

            return trivial_augment.trivial_augment_wide(img)
        for pos in range(2):
            img = apply_op_by_index(img, ops[pos], m[pos], mats[pos])
        return img

    p = pipe()
    p.build()
    return p


def dali_trivial_jpeg_pipe(files, labels, batch: int, size: int, dali_dev: str, threads: int):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug import trivial_augment

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=0 if dali_dev == "gpu" else None, seed=0,
                  enable_conditionals=True)
    def pipe():
        jpegs, lab = fn.readers.file(files=files, labels=labels, random_shuffle=True, name="r")
        img = fn.decoders.image_random_crop(jpegs, device="mixed" if dali_dev == "gpu" else "cpu",
                                            output_type=types.RGB)
        img = fn.resize(img, size=[size, size])
        img = trivial_augment.trivial_augment_wide(img)
        img = fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip(),
                                       mean=[255 * v for v in MEAN], std=[255 * v for v in STD])
        return img, lab

    p = pipe()
    p.build()
    return p


# ---------------------------------------------------------------- the workloads


def has_dali() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def count_ops(fn) -> int:
    """Operator calls (views excluded) of one call of fn: what it launches on a GPU, counted on any device."""
    from torch.utils._python_dispatch import TorchDispatchMode

    views = {"view", "unsqueeze", "select", "expand", "slice", "unbind", "as_strided", "_unsafe_view", "t", "alias",
             "squeeze", "permute", "detach", "lift_fresh", "empty", "empty_strided", "narrow", "split", "reshape"}

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.overloadpacket.__name__ not in views
            return func(*args, **(kwargs or {}))

    with Count() as c:
        fn()
    return c.n


def graphed(fn):
    """fn captured once into a CUDA graph (after a warm-up on a side stream); returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def policy_call(images: torch.Tensor, probs, mags, g, form: str) -> torch.Tensor:
    """One policy call (sample + apply) in `form`: static (the pipeline's: Triton kernels on CUDA, torch ops on the
    CPU), static torch (the torch passes wherever), indexed."""
    from hba_fast.augment.ops import cutout_centres
    from hba_fast.augment.policy import apply_policy, sample_policy
    from hba_fast.augment.static import apply_positions

    if form != "static torch":
        return apply_policy(images, probs, mags, g, static=not form.startswith("indexed"))
    b, _, h, w = images.shape
    draw = sample_policy(probs, mags, g)
    centres = [cutout_centres(b, h, w, g, images.device) for _ in range(2)]
    return apply_positions(images, draw.ops, draw.mags, centres, impl="torch")


def torch_policy_rows(args, gpu: bool, record, workload: str, images: torch.Tensor, batch: int) -> dict[str, float]:
    """The policy on a device batch: static (eager), static replayed from a CUDA graph and static with the torch
    passes (GPU), indexed. Per-sample probs / mags (B, 30), as the pipeline's sampler hands them. Returns seconds
    per batch by form."""
    dev = images.device
    probs, mags = (t.expand(batch, 30).contiguous() for t in policy_tensors(dev))
    g = torch.Generator(device=dev).manual_seed(0)
    seconds = {}
    for form in ("static", "static graph", "static torch", "indexed") if gpu else ("static", "indexed"):
        step = partial(policy_call, images, probs, mags, None if form == "static graph" else g, form)
        ops = count_ops(step)  # operator calls; the Triton kernels' launches (4 per position) come on top
        if form == "static graph":
            step = graphed(step)
        s = time_steps(step, args.iters, args.warmup, gpu)
        seconds[form] = s
        scope = "sample + apply, uint8 on the device" + (", one CUDA graph replay" if form == "static graph" else "")
        record(workload, f"torch ({form})", batch, batch / s, s, scope=scope, aten_ops=ops)
    return seconds


def bench_policy32(args, gpu: bool, pool, record) -> dict[int, dict[str, float]]:
    """Seconds per batch of each policy form, by batch size (torch forms, and 'dali' where DALI ran)."""
    from hba_fast.data.shapes10 import make_shapes10

    dev = torch.device("cuda" if gpu else "cpu")
    dali_dev = "gpu" if gpu else "cpu"
    n = max(args.batches) * 4
    images, _ = make_shapes10(n, 32, seed=0)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    policy_s = {}
    for batch in args.batches:
        policy_s[batch] = torch_policy_rows(args, gpu, record, "policy32", images[:batch].to(dev), batch)
        if not has_dali():
            record("policy32", "dali", batch, None, None, scope="skipped: NVIDIA DALI is not installed")
            continue
        for trivial, name in ((False, "dali (ours)"), (True, "dali trivial_augment_wide")):
            p = dali_policy_pipe(hwc, batch, dali_dev, args.threads, trivial)
            s = time_steps(partial(run_synced, p, gpu), args.iters, args.warmup, False)
            record("policy32", name, batch, batch / s, s, scope="host uint8 batch in, augmented batch out")
            if not trivial:
                policy_s[batch]["dali"] = s
    chunks = [(hwc[i:i + 64], i) for i in range(0, len(hwc), 64)]
    ips = pool_throughput(pool, _pil_chunk_32, chunks)
    record("policy32", f"pillow pool x{args.workers}", None, ips, None, scope="per-image PBA policy, PIL")
    if has_torchvision():
        ips = pool_throughput(pool, _tv_chunk_32, chunks)
        record("policy32", f"torchvision RandAugment pool x{args.workers}", None, ips, None, scope="per image, PIL")
    else:
        record("policy32", "torchvision RandAugment", None, None, None, scope="skipped: torchvision not installed")
    return policy_s


def bench_policy224(args, gpu: bool, record) -> None:
    dev = torch.device("cuda" if gpu else "cpu")
    for batch in [4] if args.smoke else [32, 256] if gpu else [32]:
        x = torch.randint(0, 256, (batch, 3, args.size, args.size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0)).to(dev)
        torch_policy_rows(args, gpu, record, "policy224", x, batch)


def _folder_splits(root: Path):
    from hba_fast.data.shapes10 import class_dir_names

    def image_set(split):
        files, labels = [], []
        for k, d in enumerate(class_dir_names()):
            fs = sorted(str(f) for f in (root / split / d).glob("*.jpg"))
            files += fs
            labels += [k] * len(fs)
        return pytypes.SimpleNamespace(images=None, labels=torch.tensor(labels), files=files)

    return pytypes.SimpleNamespace(train=image_set("train"), val=image_set("val"), test=image_set("val"),
                                   num_classes=10, mean=MEAN, std=STD, class_names=None)


def bench_imagenet(args, gpu: bool, pool, record, root: Path) -> float | None:
    from hba_fast.data.dali_pipeline import DaliPipeline

    dev = torch.device("cuda" if gpu else "cpu")
    splits = _folder_splits(root)
    files, size, batch = splits.train.files, args.size, args.jpeg_batch
    cfg = pytypes.SimpleNamespace(dataset="folder", image_size=size, recipe="imagenet", batch_size=batch,
                                  num_threads=args.threads, on_corrupt="skip", cutout=True)
    pipe = DaliPipeline(cfg, splits, fixed_sampler(), dev)
    for _ in pipe.train_epoch(0):  # warm-up epoch
        pass
    sync(gpu)
    t0 = time.perf_counter()
    for _ in pipe.train_epoch(1):
        pass
    sync(gpu)
    s = (time.perf_counter() - t0) / pipe.steps_per_epoch
    record("imagenet", "dali (ours)", batch, batch / s, s, scope="JPEG -> standardised float batch on device")
    p = dali_trivial_jpeg_pipe(files, splits.train.labels.tolist(), batch, size, "gpu" if gpu else "cpu",
                               args.threads)
    s2 = time_steps(partial(run_synced, p, gpu), max(2, args.iters // 2), 1, False)
    record("imagenet", "dali trivial_augment_wide", batch, batch / s2, s2, scope="same recipe, DALI's policy")
    n = min(len(files), args.pool_images)
    chunks = [(files[i:i + 16], size, i, False) for i in range(0, n, 16)]
    record("imagenet", f"pillow pool x{args.workers}", None, pool_throughput(pool, _pil_chunk_jpeg, chunks), None,
           scope="full recipe per image, PIL")
    if has_torchvision():
        chunks = [(f, sz, seed, True) for f, sz, seed, _ in chunks]
        record("imagenet", f"torchvision RandAugment pool x{args.workers}", None,
               pool_throughput(pool, _pil_chunk_jpeg, chunks), None, scope="same recipe, RandAugment for the policy")
    else:
        record("imagenet", "torchvision RandAugment", None, None, None, scope="skipped: torchvision not installed")
    return s


def _train_step(model, opt, x, y, lam, device_type: str) -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x, lam), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_models(args, gpu: bool, record, policy_s: dict[int, dict[str, float]], imagenet_s: float | None) -> None:
    """Training steps of the nets the policy feeds, then the policy's time over the WRN-40-2 step (target rows)."""
    from hba_fast.models import build_model

    dev = "cuda" if gpu else "cpu"
    torch.backends.cudnn.benchmark = True  # static shapes
    nets = [("wrn-16-2", args.batches[0], 32, 10)] if args.smoke else [("wrn-40-2", 128, 32, 10),
                                                                        ("resnet-50", 256, 224, 1000)]
    for name, batch, size, classes in nets:
        model = build_model(name, classes, "first_bn").to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (batch,), device=dev)
        lam = torch.randn(batch, 54, device=dev)
        s = time_steps(partial(_train_step, model, opt, x, y, lam, dev), args.iters, args.warmup, gpu)
        record("model", f"{name} step", batch, batch / s, s, scope="fwd+bwd+SGD, bf16 autocast, first_bn")
        if name == "resnet-50" and imagenet_s is not None:
            record("model", "resnet-50: DALI imagenet pipeline / step", batch, None, None,
                   scope="share of the step", metric="imagenet_pipeline_share", value=imagenet_s / s)
        if name in ("wrn-40-2", "wrn-16-2"):
            for form, t in policy_s.get(batch, {}).items():
                share_goal, cmp = goal("policy_share", form)
                record("model", f"policy / {name} step: {form}", batch, None, None, scope="time ratio, same batch",
                       metric="policy_share", variant=form, value=t / s, goal=share_goal, cmp=cmp)
        del model, opt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes on the CPU; checks the code paths; writes only to an explicit --out")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--cpu", action="store_true", help="measure on the CPU even where CUDA is present (real sizes)")
    ap.add_argument("--out", help=f"JSON lines file to append to (default {RESULTS.relative_to(ROOT)})")
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8, help="DALI CPU threads")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="Pillow pool processes")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--jpeg-batch", type=int, default=256)
    ap.add_argument("--jpeg-per-class", type=int, default=300, help="shapes10 JPEGs per class (500x375)")
    ap.add_argument("--pool-images", type=int, default=2048)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu
    if not gpu and not (args.smoke or args.cpu):
        raise SystemExit("bench_pipeline.py measures GPU pipelines and needs CUDA; run with --cpu to measure on the "
                         "CPU, or --smoke to check the code paths")
    jpeg_size = (500, 375)
    if args.smoke:
        args.batches, args.iters, args.warmup, args.threads = [16], 2, 1, 2
        args.workers, args.size, args.jpeg_batch, args.jpeg_per_class, args.pool_images = 2, 48, 8, 2, 16
        jpeg_size, gpu = (96, 72), False
    if "model" in args.workloads and 128 not in args.batches and not args.smoke:
        args.batches = [128, *args.batches]  # the policy share is taken at the WRN-40-2 step's batch size
    env = environment()
    if not gpu:
        env["device"] = f"cpu ({platform.processor() or platform.machine()}, {env['torch_threads']} torch threads)"
    rows = []

    def record(workload, pipeline, batch, images_per_s, s_per_batch, scope="", **extra):
        row = {"bench": "pipeline", "workload": workload, "pipeline": pipeline, "batch": batch,
               "images_per_s": images_per_s, "ms_per_batch": None if s_per_batch is None else s_per_batch * 1e3,
               "scope": scope, **extra}
        rows.append(row)
        ips = "-" if images_per_s is None else f"{images_per_s:12.0f}"
        ms = "-" if s_per_batch is None else f"{s_per_batch * 1e3:9.2f}"
        value = f"  {extra['value']:.4f}" if "value" in extra else ""
        print(f"{workload:9s} {pipeline:40s} {batch or ''!s:>5s} {ips:>12s} img/s {ms:>9s} ms{value}  {scope}",
              flush=True)

    from hba_fast.data.shapes10 import write_jpeg_tree

    policy_s, imagenet_s = {}, None
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers) as pool, tempfile.TemporaryDirectory() as tmp:
        if "policy32" in args.workloads:
            policy_s = bench_policy32(args, gpu, pool, record)
        if "policy224" in args.workloads:
            bench_policy224(args, gpu, record)
        if "imagenet" in args.workloads:
            if has_dali():
                write_jpeg_tree(tmp, args.jpeg_per_class, size=jpeg_size, seed=0, quality=90)
                imagenet_s = bench_imagenet(args, gpu, pool, record, Path(tmp))
            else:
                record("imagenet", "all rows", None, None, None, scope="skipped: NVIDIA DALI is not installed")
    if "model" in args.workloads:
        bench_models(args, gpu, record, policy_s, imagenet_s)
    out = Path(args.out) if args.out else RESULTS
    if args.smoke and not args.out:
        print("smoke run: nothing written")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(out, "a") as f:
        f.writelines(json.dumps({"time": stamp, **env, **row, **({"smoke": True} if args.smoke else {})}) + "\n"
                     for row in rows)
    print(f"appended {len(rows)} rows to {out}" + (" (smoke: code-path check, not measurements)" if args.smoke else ""))


if __name__ == "__main__":
    main()
