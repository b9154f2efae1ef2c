"""Shared training machinery: run folder, configuration, seeds, distributed setup, batches, checkpoint files.

Every training command (``train decoder``, ``train encoder``, ``train finetune``) is a ``TrainTask``
driven by ``trainer.fit`` (the loop, :mod:`matchms_diffms.train.trainer`), which builds on the parts here.
One run lives in one folder::

    RUN_DIR/run_config.json        the effective hyper-parameters (defaults < --config JSON < command line)
    RUN_DIR/model_config.json      the effective DiffMSConfig (after data-derived fields are filled in)
    RUN_DIR/log.jsonl              one JSON record per line: {"step", "epoch", "loss", "lr", "elapsed_s", ...}
    RUN_DIR/checkpoints/step-*.pt  model + optimizer + scheduler + RNG states + step (plain tensors/dicts)
    RUN_DIR/cache/                 featurised data (numpy .npz, read without pickle)
    RUN_DIR/weights/               final weights in our format (``weights.save_weights``), no optimizer state

Reproducibility and resuming
----------------------------
* The order of the data is a pure function of (seed, epoch): ``--resume`` continues with the very batch
  that would have come next. With the same seed an interrupted-and-resumed run ends with exactly the
  parameters of an uninterrupted run (same device, same world size, same torch version).
* Random numbers of the training step (diffusion time, edge noise, augmentation) come from a dedicated
  ``torch.Generator`` per rank; dropout uses the global torch RNG of the rank. Both are saved per rank in
  every checkpoint and restored on resume.

Distributed training
--------------------
Run any command under ``torchrun --nproc_per_node N``. ``--batch-size`` is the GLOBAL batch: each step's
batch is built exactly as in a single process and rank r takes items r, r + N, r + 2N, ... of it
(DistributedSampler-style sharding), so the sequence of global batches does not depend on N. After the
backward pass the gradients are averaged over ranks with one coalesced all-reduce (weighted by the number
of items each rank held), so every rank applies the same update and keeps identical parameters (checked
at the end through a parameter hash). Only rank 0 writes logs, checkpoints and weights. Backend: gloo
on CPU, nccl on CUDA (``--device cuda``: rank r uses ``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.distributed as tdist

from ..files import atomic_write

logger = logging.getLogger("matchms.diffms")

CHECKPOINT_FORMAT = "matchms-diffms-train-checkpoint/1"
_CKPT_RE = re.compile(r"^step-(\d+)\.pt$")

# Hyper-parameters shared by every command; each command adds its own and may change defaults.
COMMON_DEFAULTS = {
    "seed": 0,
    "steps": None,              # total optimizer steps; overrides epochs
    "epochs": None,             # used when steps is None
    "batch_size": 64,           # GLOBAL batch (all ranks together)
    "lr": 1e-3,
    "optimizer": "adamw",       # adamw (amsgrad) | radam
    "weight_decay": 1e-12,
    "schedule": "onecycle",     # onecycle | cosine | constant
    "pct_start": 0.3,           # OneCycle warm-up fraction
    "grad_clip": None,          # max global gradient norm, None = no clipping
    "ckpt_every": 1000,
    "keep_checkpoints": 2,      # newest checkpoints kept on disk (0 = keep all)
    "log_every": 10,
    "val_every": 1000,          # 0 = only at the end
    "val_max": 1000,            # validation items used (deterministic subset), None = all
    "threads": None,            # torch.set_num_threads; None = torch default
    "device": "cpu",
    "progress": True,           # tqdm bar on rank 0
    "stop_at": None,            # stop (with a checkpoint) after this step, e.g. for time-limited jobs
    "time_budget": None,        # stop (checkpoint + weights) after this many seconds of this invocation
    "dist_timeout_min": 180,    # collective timeout; rank 0 may featurise data while the others wait
    "model": {},                # DiffMSConfig fields (partial) for the model size
}

# Keys that may differ between the original run and a ``--resume`` invocation.
RESUME_OVERRIDABLE = {"threads", "device", "progress", "stop_at", "time_budget", "ckpt_every", "keep_checkpoints",
                      "log_every", "val_every", "dist_timeout_min", "env_workers"}


# ------------------------------------------------------------------------------------------ configuration
def parse_duration(value) -> float:
    """Seconds of a duration: a number of seconds, or a string like ``"90s"``, ``"45m"``, ``"2h"``, ``"1h30m"``.

    Raises
    ------
    ValueError
        For anything else, or a duration that is not positive.
    """
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
        if not text or parts is None or not any(parts.groups()):
            raise ValueError(f"cannot read the duration {value!r}; write e.g. 3600, 90m, 2h or 1h30m")
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + sec
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def load_json(path: str | Path) -> dict:
    """Read a JSON object from ``path`` (a clear error for anything else)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def merge_config(defaults: dict, file_cfg: dict | None, cli_cfg: dict | None) -> dict:
    """Effective hyper-parameters: ``defaults`` < ``file_cfg`` (``--config``) < ``cli_cfg`` (explicit options).

    Unknown keys are an error (a typo would otherwise be silently ignored). ``model`` dicts are merged
    key by key.
    """
    cfg = json.loads(json.dumps(defaults))          # deep copy of plain data
    for source, layer in (("--config", file_cfg or {}), ("command line", cli_cfg or {})):
        unknown = sorted(set(layer) - set(cfg))
        if unknown:
            raise ValueError(f"unknown hyper-parameters from {source}: {unknown}; known: {sorted(cfg)}")
        for key, value in layer.items():
            if key == "model" and isinstance(value, dict):
                cfg["model"] = {**cfg.get("model", {}), **value}
            else:
                cfg[key] = value
    return cfg


def resume_config(saved: dict, requested: dict, explicit: Iterable[str]) -> dict:
    """Configuration of a resumed run: the saved one, with only harmless keys overridden.

    Parameters
    ----------
    saved
        ``run_config.json`` of the run.
    requested
        The configuration the resuming invocation would have built.
    explicit
        Keys that the resuming invocation set explicitly (``--config`` or command line).
    """
    cfg = dict(saved)
    cfg["stop_at"] = requested.get("stop_at")      # these two apply to one invocation only
    cfg["time_budget"] = requested.get("time_budget")
    conflicts = []
    for key in explicit:
        if requested.get(key) == saved.get(key):
            continue
        if key in RESUME_OVERRIDABLE:
            cfg[key] = requested[key]
        else:
            conflicts.append(f"{key}: run has {saved.get(key)!r}, asked {requested.get(key)!r}")
    if conflicts:
        raise ValueError("--resume cannot change these hyper-parameters of the run (start a new run "
                         "instead): " + "; ".join(conflicts))
    return cfg


def build_model_config(overrides: dict, base=None):
    """A ``DiffMSConfig`` for our own models.

    ``base`` (default: the dataclass defaults, i.e. the MSG architecture, with real padding masking
    ``reference_padding=False``) updated with ``overrides`` (DiffMSConfig fields). An override
    ``"preset": "tiny" | "canopus" | "msg"`` starts from that preset's sizes instead (still with
    ``reference_padding=False`` unless the overrides say otherwise).
    """
    from ..model.config import DiffMSConfig, preset

    overrides = dict(overrides or {})
    if "preset" in overrides:
        base = preset(overrides.pop("preset")).replace(reference_padding=False)
    if base is None:
        base = DiffMSConfig(reference_padding=False)
    return DiffMSConfig.from_dict({**base.to_dict(), **overrides})


# ------------------------------------------------------------------------------------------ distributed
@dataclasses.dataclass
class Dist:
    """Where this process stands in a (possibly single-process) run."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()


def setup_distributed(device: str = "cpu", timeout_min: float = 180) -> Dist:
    """Initialise torch.distributed when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else a no-op.

    Parameters
    ----------
    device
        ``"cpu"`` (gloo backend) or ``"cuda"``/``"cuda:N"`` (nccl; rank r uses ``cuda:LOCAL_RANK``).
    timeout_min
        Timeout of collective operations in minutes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = str(device).startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if use_cuda:
        dev = torch.device("cuda", local_rank) if world > 1 else torch.device(device)
        if dev.index is not None:
            torch.cuda.set_device(dev)
    else:
        if str(device) != "cpu":
            raise ValueError(f"unknown device {device!r}: use cpu or cuda")
        dev = torch.device("cpu")
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                 timeout=datetime.timedelta(minutes=float(timeout_min)))
        logger.info("distributed: rank %d of %d (%s)", rank, world, tdist.get_backend())
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup_distributed(dist: Dist) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(values: list[float], dist: Dist) -> list[float]:
    """Sum a few floats over ranks (float64)."""
    if not dist.enabled:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_bytes(blob: torch.Tensor, dist: Dist) -> list[torch.Tensor]:
    """Gather one uint8 tensor per rank (same length on every rank)."""
    if not dist.enabled:
        return [blob.clone()]
    blob = blob.to(dist.device)
    out = [torch.empty_like(blob) for _ in range(dist.world_size)]
    tdist.all_gather(out, blob)
    return [o.cpu() for o in out]


def broadcast_module(module: torch.nn.Module, dist: Dist) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not dist.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            tdist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], dist: Dist) -> None:
    """Sum-reduce the gradients of ``params`` over ranks (one coalesced all-reduce) and divide by the
    world size. Losses are pre-scaled by the trainer so that this is the mean over the global batch.

    A parameter without a gradient on every rank (an output head the loss does not use) keeps
    ``grad=None`` so that the optimizer skips it exactly as in a single process.
    """
    if not dist.enabled:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dist.device)
    tdist.all_reduce(has, op=tdist.ReduceOp.MAX)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat /= dist.world_size
    offset = 0
    for p in used:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def parameter_hash(module: torch.nn.Module) -> str:
    """sha256 of all parameters and buffers (names, shapes and bytes), for cross-rank identity checks."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ seeds, RNG
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). The training loop itself only uses torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, stream: int) -> int:
    """A distinct 63-bit seed per (run seed, rank, stream)."""
    digest = hashlib.sha256(f"{seed}/{rank}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """CPU generator that fixes the data order of one epoch (identical on every rank)."""
    return torch.Generator().manual_seed(rank_seed(seed, -1, 1000 + epoch))


# ------------------------------------------------------------------------------------------ batching
def make_batches(n_items: int, batch_size: int, seed: int, epoch: int, sizes: np.ndarray | None = None,
                 bucket: str = "none", world_size: int = 1, secondary: np.ndarray | None = None,
                 chunk_batches: int = 8) -> list[list[int]]:
    """The global batches of one epoch (a pure function of its arguments).

    Parameters
    ----------
    n_items
        Number of training items.
    batch_size
        Global batch size. Batches are full: ``n_items % batch_size`` items, a fresh random subset every
        epoch, sit the epoch out (as ``drop_last``); with fewer items than ``batch_size`` the epoch is one
        batch of all items.
    seed, epoch
        Fix the random order.
    sizes
        Size of every item (heavy atoms, tokens), needed for ``bucket="sorted"``.
    bucket
        ``"none"``: random batches. ``"sorted"``: items are sorted by size (random order within a size),
        cut into consecutive batches, and the batches are shuffled -- a batch then holds one or two
        neighbouring sizes, so there is (almost) no padding; this is faster and keeps the padding-
        dependent decoder features equal to those of padding-free inference.
    world_size
        Batches must hold at least one item per rank.
    secondary, chunk_batches
        Optional second size (e.g. the token count of a spectrum whose graph size is ``sizes``): the
        size-sorted items are cut into chunks of ``chunk_batches`` batches and sorted by ``secondary``
        within each chunk, so a batch is tight in both sizes (its ``sizes`` range is that of its chunk).
    """
    if n_items < world_size:
        raise ValueError(f"{n_items} training items cannot be shared by {world_size} ranks")
    bs = min(int(batch_size), n_items)
    if bs < world_size:
        raise ValueError(f"batch size {batch_size} is smaller than the number of ranks {world_size}")
    g = epoch_generator(seed, epoch)
    perm = torch.randperm(n_items, generator=g).numpy()
    n_batches = n_items // bs
    perm = perm[:n_batches * bs]              # the dropped remainder is a random subset, whatever the sizes
    if bucket == "sorted":
        if sizes is None:
            raise ValueError("bucket='sorted' needs item sizes")
        perm = perm[np.argsort(np.asarray(sizes)[perm], kind="stable")]
        if secondary is not None:
            chunk = max(1, int(chunk_batches)) * bs
            perm = np.concatenate([c[np.argsort(np.asarray(secondary)[c], kind="stable")]
                                   for c in np.split(perm, np.arange(chunk, len(perm), chunk))])
    elif bucket != "none":
        raise ValueError(f"unknown bucketing {bucket!r}: use none or sorted")
    batches = [perm[i * bs:(i + 1) * bs].tolist() for i in range(n_batches)]
    if bucket == "sorted":
        order = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in order]
    return batches


def shard(batch: list[int], dist: Dist) -> list[int]:
    """This rank's part of a global batch: items rank, rank + W, rank + 2W, ..."""
    return batch[dist.rank::dist.world_size]


def subset_for_validation(n: int, val_max: int | None, seed: int) -> np.ndarray:
    """A deterministic subset of ``range(n)`` of at most ``val_max`` items (all when ``val_max`` is None)."""
    if val_max is None or n <= val_max:
        return np.arange(n)
    g = torch.Generator().manual_seed(rank_seed(seed, -1, 11))
    return np.sort(torch.randperm(n, generator=g)[:int(val_max)].numpy())


# ------------------------------------------------------------------------------------------ optimizer
def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    """AdamW(amsgrad=True) like DiffMS, or RAdam like the encoder pretraining of the paper."""
    name = cfg["optimizer"].lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], amsgrad=True, weight_decay=cfg["weight_decay"])
    if name == "radam":
        return torch.optim.RAdam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}: use adamw or radam")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: dict, total_steps: int):
    """Per-step learning-rate schedule: ``onecycle`` (DiffMS code: max_lr = lr, pct_start 0.3),
    ``cosine`` (cosine annealing from lr to 0 over the run, the paper's wording) or ``constant``."""
    name = cfg["schedule"].lower()
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=max(total_steps, 2),
                                                   pct_start=cfg["pct_start"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule {cfg['schedule']!r}: use onecycle, cosine or constant")


# ------------------------------------------------------------------------------------------ run folder
class RunLog:
    """JSON-lines log ``RUN_DIR/log.jsonl``, written by rank 0 only, one flushed line per record."""

    def __init__(self, path: Path, dist: Dist):
        self.path = Path(path)
        self.enabled = dist.is_main

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=_json_default) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (work lost since the checkpoint a run resumes from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("step", 0) <= step:
                kept.append(line)
        text = "".join(k + "\n" for k in kept)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))


def read_log(path: str | Path) -> list[dict]:
    """All records of a ``log.jsonl``."""
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a matchms-diffms training checkpoint")
    return ckpt


# ------------------------------------------------------------------------------------------ the task
class TrainTask:
    """What a training command provides to the trainer (``trainer.fit``).

    Attributes set by ``setup``: ``model`` (the ``nn.Module`` whose parameters are trained and
    checkpointed), ``n_train`` and ``n_val`` (item counts) and ``data_summary`` (a JSON-able dict written
    to the log's start record and the weights' info).
    """

    name = "task"
    val_keys: tuple = ()            # names of the metrics ``validate`` returns
    model: torch.nn.Module
    n_train: int = 0
    n_val: int = 0
    data_summary: dict = {}

    def setup(self, cfg: dict, run_dir: Path, dist: Dist) -> None:
        """Load and featurise data (rank 0 writes caches, the others wait), then build the model.

        The model must be created right after ``seed_everything(cfg['seed'])`` so that every rank
        starts from the same parameters.
        """
        raise NotImplementedError

    def batches(self, epoch: int, cfg: dict, dist: Dist) -> list[list[int]]:
        """Global batches (lists of training-item indices) of ``epoch``."""
        raise NotImplementedError

    def loss(self, indices: list[int], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Mean training loss of the items ``indices`` (model in train mode) and extra scalars to log."""
        raise NotImplementedError

    def validate(self, indices: list[int], generator: torch.Generator) -> dict:
        """Sums over the validation items ``indices``: ``{metric: (sum, count)}`` (model in eval mode,
        inside ``torch.no_grad``). Reduced over ranks by the trainer."""
        return {}

    def export(self, directory: Path, info: dict) -> None:
        """Write the final weights (``weights.save_weights``) into ``directory``."""
        raise NotImplementedError


def write_model_card(directory: Path, info: dict, config) -> None:
    """A short MODEL_CARD.md next to the exported weights (what was trained on what, how long)."""
    lines = [f"# {info.get('name', 'model')}", "",
             f"Trained with `matchms-diffms train {info.get('stage')}` for {info.get('steps')} steps "
             f"(seed {info.get('seed')}, {info.get('world_size', 1)} process(es)).", "",
             "## Data", "", "```", json.dumps(info.get("data", {}), indent=2, sort_keys=True, default=str),
             "```", "",
             "## Hyper-parameters", "", "```",
             json.dumps(info.get("hyper_parameters", {}), indent=2, sort_keys=True, default=str), "```", "",
             "## Model", "", f"atom types {config.atom_types}; adduct slots {[a for a in config.adducts if a]};",
             f"max_n_nodes {config.max_n_nodes}; edge marginals {config.edge_marginals}.", "",
             "Parts not trained by this run (see `untrained` in config.json) hold their random "
             "initialisation.", "",
             "Check the licences of the training data before distributing these weights.", ""]
    (Path(directory) / "MODEL_CARD.md").write_text("\n".join(lines))
