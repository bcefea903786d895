"""SchedulePolicy: the Pillow per-image path, the batched torch path and the DALI path apply the same policy.

- op by op: `hba_fast.pil_ops` (Pillow's own functions, the reference) against the batched `hba_fast.ops` on real
  CIFAR-10 images, each sample at its own magnitude: bit for bit;
- the draw: each path's sampler against the exact law of PBA's draw (`pba_draw.pba_law`): op rates per position,
  K, signs and magnitudes;
- end to end: one image through each path many times, with a schedule of deterministic ops; the frequency of
  every distinct output image against the law's prediction (chi-square);
- DataLoader workers (fork, spawn, forkserver; persistent): distinct streams per worker, `set_epoch` reaching them,
  pickling without tensors; `seed` alone fixing every image in fresh processes whatever torch's seed.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hba_fast.augment.ops import OP_INDEX, OPS, apply_op, cutout
from hba_fast.augment.pba_draw import draw_pba, pba_law
from hba_fast.augment.pil import apply_pil_op, cutout_box
from hba_fast.augment.space import NUM_OPS, NUM_SLOTS
from hba_fast.schedule.policy import SchedulePolicy

B = 24


def _magnitudes(op, n: int, seed: int) -> np.ndarray:
    lo, hi = (op.lo, op.hi) if op.has_magnitude else (0.0, 1.0)
    m = np.random.default_rng(seed).uniform(lo, hi, n).astype(np.float32)
    m[:2] = [lo, hi]
    if op.signed:
        m[1::2] *= -1
    return m


@pytest.mark.parametrize("name", [op.name for op in OPS if op.name != "Cutout"])
def test_pil_path_matches_batched_ops(cifar_mini, name):
    images = cifar_mini["train_images"][:B]  # (B, 32, 32, 3)
    m = _magnitudes(OPS[OP_INDEX[name]], B, seed=OP_INDEX[name])
    batched = apply_op(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), name, torch.from_numpy(m))
    batched = batched.permute(0, 2, 3, 1).numpy()
    for i in range(B):
        ref = np.asarray(apply_pil_op(Image.fromarray(images[i]), name, float(m[i])))
        assert (ref != batched[i]).sum() == 0, (name, i, float(m[i]))


def test_pil_cutout_matches_batched_cutout(cifar_mini):
    images = cifar_mini["val_images"][:B, :24]  # non-square (24, 32)
    m = _magnitudes(OPS[OP_INDEX["Cutout"]], B, seed=3)
    for i in range(B):
        rng_state = np.random.default_rng(i)
        u = np.random.default_rng(i).random(2)
        out = np.asarray(apply_pil_op(Image.fromarray(images[i]), "Cutout", float(m[i]), rng_state))
        side = int(np.round(np.float32(m[i]) * np.float32(24)))
        centre = torch.tensor([[min(int(u[0] * 24), 23), min(int(u[1] * 32), 31)]])
        x = torch.from_numpy(images[i:i + 1]).permute(0, 3, 1, 2).contiguous()
        ref = cutout(x, torch.tensor([side]), centres=centre)[0].permute(1, 2, 0).numpy()
        assert (out != ref).sum() == 0, (i, float(m[i]), cutout_box(float(m[i]), 24, 32, np.random.default_rng(i)))


def _schedule(seed: int = 0, epochs: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.0, 0.5, (epochs, NUM_SLOTS)).astype(np.float32)
    lo = np.array([OPS[j % NUM_OPS].lo for j in range(NUM_SLOTS)])
    hi = np.array([OPS[j % NUM_OPS].hi for j in range(NUM_SLOTS)])
    has = np.array([OPS[j % NUM_OPS].has_magnitude for j in range(NUM_SLOTS)])
    mags = (lo + (hi - lo) * rng.uniform(size=(epochs, NUM_SLOTS))) * has
    return probs, mags.astype(np.float32)


def _rates(ops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ops (N, 2) op indices or -1 -> P(op k first), P(op k second), P(K applied = 0, 1, 2)."""
    n = len(ops)
    first = np.bincount(ops[:, 0][ops[:, 0] >= 0], minlength=NUM_OPS) / n
    second = np.bincount(ops[:, 1][ops[:, 1] >= 0], minlength=NUM_OPS) / n
    count = np.bincount((ops >= 0).sum(1), minlength=3) / n
    return first, second, count


def _draws_numpy(policy: SchedulePolicy, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ops, mags = np.full((n, 2), -1), np.zeros((n, 2))
    for i in range(n):
        for pos, (op, m) in enumerate(policy.draw(rng)):
            ops[i, pos], mags[i, pos] = op, m
    return ops, mags


def _draws_dali(policy: SchedulePolicy, n: int) -> tuple[np.ndarray, np.ndarray]:
    pytest.importorskip("nvidia.dali")
    from hba_fast.schedule.dali import _DrawSource

    source = _DrawSource(policy)
    out = [source(None) for _ in range(n)]
    return np.stack([o for o, _ in out]), np.stack([m for _, m in out])


@pytest.mark.parametrize("path", ["pil", "batch", "dali"])
def test_every_path_draws_pbas_law(path):
    probs, mags = _schedule()
    policy = SchedulePolicy.from_arrays(probs, mags, seed=5)
    policy.set_epoch(1)
    n = 30000
    if path == "batch":
        d = policy.batch_draw(n, "cpu")
        ops, signed = d.ops.numpy(), d.mags.numpy()
    else:
        ops, signed = (_draws_numpy if path == "pil" else _draws_dali)(policy, n)
    law = pba_law(probs[1])
    first, second, count = _rates(ops)
    exp_first, exp_second = law.op_rates()
    exp_count = np.array([law.none, law.single.sum(), law.pair.sum()])
    tol = 4.5 * np.sqrt(0.25 / n)  # 4.5 sigma of a rate
    assert np.abs(first - exp_first).max() < tol
    assert np.abs(second - exp_second).max() < tol
    assert np.abs(count - exp_count).max() < tol
    # magnitudes: each applied op's |m| is one of its two slots' magnitudes; signed ops are negative half the time
    for k, op in enumerate(OPS):
        sel = ops == k
        if not op.has_magnitude or sel.sum() < 200:
            continue
        values = np.abs(signed[sel])
        assert (np.abs(values[:, None] - mags[1, [k, k + NUM_OPS]][None]).min(1) < 1e-5).all(), op.name
        neg = (signed[sel] < 0).mean()
        assert (abs(neg - 0.5) < 5 * np.sqrt(0.25 / sel.sum())) if op.signed else neg == 0, op.name


# ---------------------------------------------------------------- end to end, through the images

_DETERMINISTIC = {"Invert": (0.5, 0.0), "Equalize": (0.3, 0.0), "Posterize": (0.6, 4.0), "Solarize": (0.4, 128.0)}


def _deterministic_schedule(ops: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    probs, mags = np.zeros((1, NUM_SLOTS), np.float32), np.zeros((1, NUM_SLOTS), np.float32)
    for name, (p, m) in (ops or _DETERMINISTIC).items():
        probs[0, OP_INDEX[name]], mags[0, OP_INDEX[name]] = p, m
    return probs, mags


def _expected_outcomes(img: np.ndarray, probs: np.ndarray, mags: np.ndarray) -> dict[bytes, float]:
    """Every output image PBA's draw can make, with its probability (from the law, through Pillow)."""
    law = pba_law(probs)

    def run(*slots):
        out = Image.fromarray(img)
        for j in slots:
            out = apply_pil_op(out, j % NUM_OPS, float(mags[j]))
        return np.asarray(out).tobytes()

    table: dict[bytes, float] = {}
    table[run()] = table.get(run(), 0.0) + law.none
    for a in range(NUM_SLOTS):
        if law.single[a] > 0:
            key = run(a)
            table[key] = table.get(key, 0.0) + law.single[a]
        for b in range(NUM_SLOTS):
            if law.pair[a, b] > 0:
                key = run(a, b)
                table[key] = table.get(key, 0.0) + law.pair[a, b]
    return table


def _chi_square_ok(outputs: list[bytes], expected: dict[bytes, float]) -> tuple[bool, str]:
    from scipy.stats import chi2

    n = len(outputs)
    assert set(outputs) <= set(expected), "an output that the policy cannot produce"
    keys = list(expected)
    observed = np.array([sum(o == k for o in outputs) for k in keys], np.float64)
    exp = np.array([expected[k] for k in keys]) * n
    stat = float(((observed - exp) ** 2 / exp).sum())
    limit = chi2.ppf(1 - 1e-4, len(keys) - 1)
    return stat < limit, f"chi2 {stat:.1f} >= {limit:.1f}: observed {observed} expected {np.round(exp)}"


@pytest.mark.parametrize("path", ["pil", "batch", "dali"])
def test_outputs_follow_the_law_end_to_end(cifar_mini, path):
    img = cifar_mini["test_images"][7]  # (32, 32, 3)
    probs, mags = _deterministic_schedule()
    expected = _expected_outcomes(img, probs[0], mags[0])
    policy = SchedulePolicy.from_arrays(probs, mags, seed=11)
    n = 2000
    if path == "pil":
        outputs = [np.asarray(policy(Image.fromarray(img))).tobytes() for _ in range(n)]
    elif path == "batch":
        x = torch.from_numpy(img).permute(2, 0, 1)[None].repeat(n, 1, 1, 1).contiguous()
        out = policy.batch(x).permute(0, 2, 3, 1).numpy()
        outputs = [o.tobytes() for o in out]
    else:
        outputs = [o.tobytes() for o in _run_dali(policy, np.repeat(img[None], 250, 0), runs=n // 250)]
    ok, why = _chi_square_ok(outputs, expected)
    assert ok, why


def _run_dali(policy: SchedulePolicy, images: np.ndarray, runs: int) -> list[np.ndarray]:
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(images), num_threads=2, device_id=None, enable_conditionals=True, seed=3,
                  prefetch_queue_depth=1)
    def user_pipeline():  # the user's own pipeline: any source, then the policy
        x = fn.external_source(source=lambda: list(images), batch=True, layout="HWC", dtype=types.UINT8)
        return policy.dali(x)

    pipe = user_pipeline()
    pipe.build()
    out = []
    for _ in range(runs):
        (batch,) = pipe.run()
        out.extend(np.array(batch.as_tensor()))
    return out


def test_dali_needs_conditionals():
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    from hba_fast.errors import ConfigError

    policy = SchedulePolicy.from_arrays(*_deterministic_schedule())

    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def no_conditionals():
        x = fn.external_source(source=lambda: [np.zeros((8, 8, 3), np.uint8)] * 2, batch=True, layout="HWC",
                               dtype=types.UINT8)
        return policy.dali(x)

    with pytest.raises(ConfigError, match="enable_conditionals=True"):
        no_conditionals()


# ---------------------------------------------------------------- epochs, workers, pickling, fixed policies

def test_epochs_stretch_like_hba_fast_train():
    probs, mags = _schedule(epochs=4)
    policy = SchedulePolicy.from_arrays(probs, mags, epochs=8)
    assert [policy.entry_index(e) for e in range(8)] == [0, 1, 1, 2, 2, 3, 3, 3]
    policy.set_epoch(5)
    assert np.array_equal(policy.entry()[0], probs[3])
    assert SchedulePolicy.from_arrays(probs, mags).entry_index(10) == 3  # no stretch: the last entry


def test_batch_reads_the_epoch_from_a_static_buffer_that_set_epoch_rewrites():
    """What a CUDA graph captured around `batch` needs: the entry sits in one static per-device buffer (the
    trainer's ScheduleSampler) that `set_epoch` alone rewrites in place, so a replay, which runs no Python, applies
    the epoch set last. On the CPU: the same tensors twice, the buffer changed between them by set_epoch only."""
    probs = np.zeros((2, NUM_SLOTS), np.float32)
    probs[1, OP_INDEX["Invert"]] = 1.0  # epoch 1: Invert unless K = 0
    policy = SchedulePolicy.from_arrays(probs, np.zeros_like(probs), seed=0)
    x = torch.randint(0, 256, (256, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(policy.batch(x), x)  # epoch 0: every probability 0
    buf = policy._sampler._on[torch.device("cpu")][1]  # (2, 30): the entry the draws read
    assert torch.equal(buf[0], torch.zeros(NUM_SLOTS))
    policy.set_epoch(1)
    assert policy._sampler._on[torch.device("cpu")][1] is buf  # the same storage a captured graph holds
    assert torch.equal(buf[0], torch.from_numpy(probs[1]))  # rewritten before any further batch call
    inverted = (policy.batch(x) == 255 - x).flatten(1).all(1)
    assert 0.7 < inverted.float().mean() < 0.9  # P(K > 0) = 0.8
    policy.set_epoch(0)
    assert torch.equal(buf[0], torch.zeros(NUM_SLOTS)) and torch.equal(policy.batch(x), x)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(np.asarray(self.transform(Image.fromarray(self.images[i])))).permute(2, 0, 1)


@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_get_their_own_streams_and_the_epoch(cifar_mini, start):
    """Under every start method (spawn: macOS' and Windows' default; forkserver: Linux's from Python 3.14), two
    persistent workers: the pickled policy holds no tensors (spawn used to fail with `bad value(s) in fds_to_keep`,
    forkserver to lose its workers), set_epoch reaches them, and they do not repeat each other."""
    images = np.repeat(cifar_mini["train_images"][:1], 64, 0)  # one image 64 times
    probs = np.zeros((2, NUM_SLOTS), np.float32)
    probs[1, OP_INDEX["Invert"]] = 1.0  # epoch 1: Invert unless K = 0
    policy = SchedulePolicy.from_arrays(probs, np.zeros_like(probs), seed=0)
    policy.batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))  # device tables and generators exist: not pickled
    loader = torch.utils.data.DataLoader(_Images(images, policy), batch_size=8, num_workers=2,
                                         persistent_workers=True, multiprocessing_context=start)
    original = torch.from_numpy(images[0]).permute(2, 0, 1)
    epoch0 = torch.cat(list(loader))
    assert (epoch0 == original).all()  # epoch 0: every probability 0
    policy.set_epoch(1)  # reaches the persistent workers through shared memory
    epoch1 = torch.cat(list(loader))
    inverted = (epoch1 == 255 - original).flatten(1).all(1)
    assert 0.6 < inverted.float().mean() < 0.95  # P(K > 0) = 0.8
    # the two workers (batches alternate between them) must not repeat each other's draws
    w0, w1 = inverted.view(8, 8)[0::2].flatten(), inverted.view(8, 8)[1::2].flatten()
    assert not torch.equal(w0, w1)


def _tensors(obj, seen=None) -> list:
    """Every torch tensor reachable from obj's pickled state (dicts, lists, tuples, objects' __getstate__)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__getstate__") and not isinstance(obj, (str, bytes, int, float, np.ndarray, type)):
        state = obj.__getstate__()
        items = [state] if state is not None and state is not obj else []
    else:
        items = []
    return [t for item in items for t in _tensors(item, seen)]


def test_pickled_state_holds_no_tensors():
    """What a spawned worker receives: the schedule (numpy) and settings, no tensors (their shared-memory file
    descriptors close before a spawned worker starts) and no generators, even after batch() made device tables."""
    policy = SchedulePolicy.from_arrays(*_schedule(), epochs=6, seed=1)
    policy.batch(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    policy.set_epoch(3)
    assert _tensors(policy.__getstate__()) == []
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.epoch == 3 and copy.batch(torch.zeros(4, 3, 8, 8, dtype=torch.uint8)).shape == (4, 3, 8, 8)


_FRESH_PROCESS = """
import hashlib, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from test_schedule_policy import _Images
from hba_fast.augment.ops import OPS
from hba_fast.schedule.policy import SchedulePolicy

torch.manual_seed(int(sys.argv[1]))
np.random.seed(int(sys.argv[1]))
images = np.load({mini!r})["train_images"][:24]
probs = np.full((2, 30), 0.3, np.float32)
mags = np.array([[(OPS[j % 15].lo + OPS[j % 15].hi) / 2 for j in range(30)]] * 2, np.float32)
policy = SchedulePolicy.from_arrays(probs, mags, seed=int(sys.argv[2]))
loader = torch.utils.data.DataLoader(_Images(images, policy), batch_size=4, num_workers=2, persistent_workers=True)
out = []
for epoch in range(2):
    policy.set_epoch(epoch)
    out += [x.numpy().tobytes() for x in loader]
out.append(policy(images[0]).tobytes())  # the main process draws too
print(hashlib.sha256(b"".join(out)).hexdigest())
"""


def test_seed_alone_fixes_the_images_in_fresh_processes(cifar_mini, tmp_path):
    """Two fresh processes, the same `seed`, different torch (and numpy) global seeds: the same images from a
    DataLoader with two persistent workers over two epochs (and from the main process); another seed: others."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import CIFAR_MINI

    script = tmp_path / "fresh.py"
    script.write_text(_FRESH_PROCESS.format(tests=str(Path(__file__).parent), mini=str(CIFAR_MINI)))

    def images_hash(torch_seed: int, seed: int) -> str:
        run = subprocess.run([sys.executable, str(script), str(torch_seed), str(seed)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    first = images_hash(1, 5)
    assert images_hash(2, 5) == first
    assert images_hash(1, 6) != first


def test_pickle_round_trip_keeps_schedule_and_epoch():
    probs, mags = _schedule()
    policy = SchedulePolicy.from_arrays(probs, mags, epochs=6, seed=2)
    policy.set_epoch(4)
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.epoch == 4 and copy.entry_index() == policy.entry_index()
    assert np.array_equal(copy.probs, probs)
    copy.set_epoch(0)
    assert policy.epoch == 4  # a pickled copy outside process start-up is independent
    img = Image.new("RGB", (8, 8), (10, 200, 30))
    assert copy(img).size == (8, 8)


def test_tensor_and_array_inputs_keep_their_type(cifar_mini):
    policy = SchedulePolicy.from_arrays(*_schedule(), seed=0)
    img = cifar_mini["train_images"][0]
    out_t = policy(torch.from_numpy(img).permute(2, 0, 1).contiguous())
    assert out_t.dtype == torch.uint8 and out_t.shape == (3, 32, 32)
    out_a = policy(img)
    assert out_a.dtype == np.uint8 and out_a.shape == (32, 32, 3)
    with pytest.raises(TypeError, match="uint8"):
        policy(torch.zeros(3, 8, 8))


def test_fixed_policy_rates_match_between_pil_and_batch():
    subs = [[("Invert", 0.8, 0.0), ("Rotate", 0.5, 20.0)], [("Equalize", 0.3, 0.0), ("Solarize", 1.0, 100.0)]]
    policy = SchedulePolicy.fixed(subs, seed=4)
    n = 20000
    ops_np, mags_np = _draws_numpy(policy, n)
    d = policy.batch_draw(n, "cpu")
    for ops, mags in ((ops_np, mags_np), (d.ops.numpy(), d.mags.numpy())):
        rate = {name: (ops == OP_INDEX[name]).sum() / n for name in ("Invert", "Rotate", "Equalize", "Solarize")}
        expected = {"Invert": 0.4, "Rotate": 0.25, "Equalize": 0.15, "Solarize": 0.5}
        for name, r in rate.items():
            assert abs(r - expected[name]) < 0.02, (name, r)
        rot = mags[ops == OP_INDEX["Rotate"]]
        assert np.allclose(np.abs(rot), 20.0) and 0.45 < (rot < 0).mean() < 0.55


def test_autoaugment_uses_the_baselines_table():
    from hba_fast.augment.baselines import AUTOAUGMENT, aa_magnitude

    policy = SchedulePolicy.autoaugment("cifar10", seed=0)
    assert len(policy.subpolicies) == len(AUTOAUGMENT["cifar10"])
    from hba_fast.augment.ops import OP_INDEX

    want = tuple(tuple((OP_INDEX[op], p, aa_magnitude(op, level)) for op, p, level in sub)
                 for sub in AUTOAUGMENT["cifar10"])
    assert policy.subpolicies == want  # the magnitudes `hba-fast train --augment autoaugment` applies
    assert policy(Image.new("RGB", (32, 32))).size == (32, 32)


@pytest.mark.gpu
def test_batch_on_cuda_is_sync_free_and_matches_rates():
    probs, mags = _schedule()
    policy = SchedulePolicy.from_arrays(probs, mags, seed=1)
    x = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, device="cuda")
    policy.batch(x)  # warm-up (per-device copies of the schedule)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = policy.batch(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.is_cuda
    d = policy.batch_draw(50000, "cuda")
    first, _, _ = _rates(d.ops.cpu().numpy())
    assert np.abs(first - pba_law(probs[0]).op_rates()[0]).max() < 0.01


def test_numpy_draw_respects_k():
    probs = np.ones(NUM_SLOTS)
    rng = np.random.default_rng(0)
    lengths = np.bincount([len(draw_pba(probs, np.zeros(NUM_SLOTS), rng)) for _ in range(5000)], minlength=3)
    assert np.allclose(lengths / 5000, [0.2, 0.3, 0.5], atol=0.03)


def test_in_a_torchvision_compose_and_dataloader():
    """The README's DataLoader example, with torchvision's own Compose and dataset class (FakeData: PIL images)."""
    tv = pytest.importorskip("torchvision")
    T = tv.transforms
    probs = np.zeros((2, NUM_SLOTS), np.float32)
    probs[1, OP_INDEX["Invert"]] = 1.0
    policy = SchedulePolicy.from_arrays(probs, np.zeros_like(probs), epochs=4, seed=0)  # stretched: 2 -> 4 epochs
    plain = tv.datasets.FakeData(size=16, image_size=(3, 32, 32), transform=T.PILToTensor())
    augmented = tv.datasets.FakeData(size=16, image_size=(3, 32, 32), transform=T.Compose(
        [policy, T.RandomHorizontalFlip(p=0.0), T.PILToTensor()]))
    loader = torch.utils.data.DataLoader(augmented, batch_size=8, num_workers=2, persistent_workers=True)
    reference = torch.stack([plain[i][0] for i in range(16)])
    changed = []
    for epoch in range(4):
        policy.set_epoch(epoch)
        images = torch.cat([x for x, _ in loader])
        changed.append((images == 255 - reference).flatten(1).all(1).float().mean().item())
    # entry floor(e * 2 / 4 + 1/2): epoch 0 takes entry 0 (nothing), epochs 1-3 entry 1 (Invert unless K = 0)
    assert changed[0] == 0.0 and min(changed[1:]) > 0.4
