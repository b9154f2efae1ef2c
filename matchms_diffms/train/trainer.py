"""The training loop of every ``train`` command: a :class:`Trainer` holds one run and its parts.

``fit(task, cfg, run_dir)`` is what a command calls: distributed set-up, then ``Trainer.prepare`` (run folder,
data and model, optimizer, a resumed state) and ``Trainer.run`` (the steps, logging, validation, checkpoints,
the final export). The parts are methods a test or another driver (a GPU run, a time-budgeted run) can call
on their own: ``train_step`` (one optimizer step on one global batch), ``validate``, ``save_checkpoint``,
``resume_from``, ``finish``. The building blocks (configuration, ranks, batches, optimizer, run log,
checkpoint files) live in :mod:`matchms_diffms.train.common`; what stays bit-identical across an interruption
is described there.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from ..files import atomic_write
from .common import (CHECKPOINT_FORMAT, Dist, RunLog, TrainTask, all_gather_bytes, all_reduce_sum,
                     average_gradients, broadcast_module, checkpoint_paths, cleanup_distributed, load_checkpoint,
                     make_optimizer, make_scheduler, parameter_hash, parse_duration, rank_seed, seed_everything,
                     setup_distributed, shard, subset_for_validation, write_json)

logger = logging.getLogger("matchms.diffms")

VALIDATION_SEED = 0  # the held-out subset and its noise: the same for every run, whatever its --seed


def fit(task: TrainTask, cfg: dict, run_dir: str | Path, resume: bool = False) -> dict:
    """Train ``task`` with hyper-parameters ``cfg`` in ``run_dir``; returns a summary dict.

    Handles distributed setup (when run by torchrun), seeds, checkpoints every ``ckpt_every`` steps and
    at the end, ``resume``, the JSON-lines log, validation every ``val_every`` steps and at the end, and
    the final export into ``RUN_DIR/weights``.
    """
    dist = setup_distributed(cfg["device"], cfg.get("dist_timeout_min", 180))
    try:
        trainer = Trainer(task, cfg, Path(run_dir), dist)
        trainer.prepare(resume)
        return trainer.run()
    finally:
        cleanup_distributed(dist)


def total_steps(cfg: dict, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: ``steps``, else ``epochs`` x ``steps_per_epoch`` (rounded up)."""
    if cfg.get("steps") is not None:
        return int(cfg["steps"])
    if cfg.get("epochs") is not None:
        return int(math.ceil(float(cfg["epochs"]) * steps_per_epoch))
    raise ValueError("give the length of the run: --steps or --epochs")


@dataclasses.dataclass
class StepResult:
    """What one optimizer step reports: the global-batch mean loss and extra scalars, the gradient norm
    before clipping (``None`` without ``grad_clip``) and the learning rate the step used."""
    loss: float
    extra: dict
    grad_norm: float | None
    lr: float


class LogWindow:
    """Means of the step results since the last log record."""

    def __init__(self):
        self.n, self.loss, self.grad_norm, self.extra, self.lr = 0, 0.0, 0.0, {}, None

    def add(self, result: StepResult) -> None:
        self.loss += result.loss
        self.lr = result.lr
        self.n += 1
        for key, value in result.extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        if result.grad_norm is not None:
            self.grad_norm += result.grad_norm

    def record(self, with_grad_norm: bool) -> dict:
        """``{"loss", "lr", extra..., "grad_norm"}`` of the window (the means; ``lr`` of its last step)."""
        rec = {"loss": self.loss / self.n, "lr": self.lr}
        rec.update({k: v / self.n for k, v in self.extra.items()})
        if with_grad_norm:
            rec["grad_norm"] = self.grad_norm / self.n
        return rec


class Trainer:
    """One training run of ``task`` with hyper-parameters ``cfg`` in ``run_dir`` on this rank.

    Attributes after :meth:`prepare`: ``model``, ``params`` (trained parameters), ``optimizer``,
    ``scheduler``, ``noise_gen`` (this rank's generator of the training step's random numbers),
    ``steps_per_epoch``, ``n_total`` (steps of the run), ``step`` (steps done) and ``log``.
    """

    def __init__(self, task: TrainTask, cfg: dict, run_dir: Path, dist: Dist):
        self.task, self.cfg, self.run_dir, self.dist = task, cfg, Path(run_dir), dist
        self.step, self.elapsed_before, self._t0 = 0, 0.0, time.perf_counter()

    # ------------------------------------------------------------------------------------- set-up
    def prepare(self, resume: bool) -> None:
        """Check the run folder, write ``run_config.json``, build data, model, optimizer and generators, and
        continue from the newest checkpoint when ``resume``."""
        cfg, dist = self.cfg, self.dist
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        existing = self._checked_checkpoints(resume)
        if dist.is_main:
            write_json(self.run_dir / "run_config.json", {**cfg, "command": self.task.name})
        self.log = RunLog(self.run_dir / "log.jsonl", dist)
        self._build()
        if resume:
            self.resume_from(existing[-1])
        else:
            self._log_start()

    def _checked_checkpoints(self, resume: bool) -> list[Path]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = checkpoint_paths(self.run_dir)
        if existing and not resume:
            raise ValueError(f"{self.run_dir} already holds checkpoints of a run; pass --resume to continue it "
                             "or choose another --out")
        if resume and not existing:
            raise ValueError(f"--resume: {self.run_dir} holds no checkpoint to resume from")
        return existing

    def _build(self) -> None:
        """Data, model, optimizer, schedule and random streams, in an order every rank and every resume
        repeats (the model right after the seed, so that every rank starts from the same parameters)."""
        cfg, dist, task = self.cfg, self.dist, self.task
        seed = int(cfg["seed"])
        seed_everything(seed)
        task.setup(cfg, self.run_dir, dist)          # data (rank 0 featurises, others wait) + model from the seed
        self.model = task.model.to(dist.device)
        broadcast_module(self.model, dist)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        self._epoch_batches = {0: task.batches(0, cfg, dist)}
        self.steps_per_epoch = len(self._epoch_batches[0])
        if self.steps_per_epoch == 0:
            raise ValueError("no training batch: too few training items for the batch size")
        self.n_total = total_steps(cfg, self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.n_total)
        self.noise_gen = torch.Generator(device=dist.device)
        self.noise_gen.manual_seed(rank_seed(seed, dist.rank, 1))
        torch.manual_seed(rank_seed(seed, dist.rank, 2))     # dropout stream of this rank

    def _log_start(self) -> None:
        task = self.task
        self.log.write({"event": "start", "step": 0, "command": task.name, "world_size": self.dist.world_size,
                        "n_train": task.n_train, "n_val": task.n_val, "total_steps": self.n_total,
                        "steps_per_epoch": self.steps_per_epoch,
                        "n_parameters": sum(p.numel() for p in self.params), "data": task.data_summary})

    def resume_from(self, path: Path) -> None:
        """Continue from the checkpoint ``path``: model, optimizer, schedule, step, time spent and this rank's
        random streams (reseeded from the step when the number of ranks changed); the log loses the records
        after the checkpoint."""
        ckpt = load_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        dist, seed = self.dist, int(self.cfg["seed"])
        if int(ckpt["world_size"]) == dist.world_size:
            _restore_rng(ckpt["rng"][dist.rank], self.noise_gen, dist.device)
        else:
            logger.warning("resuming with %d ranks a run checkpointed with %d: random streams are reseeded "
                           "(data order is unaffected)", dist.world_size, int(ckpt["world_size"]))
            self.noise_gen.manual_seed(rank_seed(seed, dist.rank, 100 + self.step))
            torch.manual_seed(rank_seed(seed, dist.rank, 200 + self.step))
        self.log.truncate_after(self.step)
        self.log.write({"event": "resume", "step": self.step, "checkpoint": path.name})
        logger.info("resumed %s from %s (step %d)", self.task.name, path, self.step)

    # ------------------------------------------------------------------------------------- the parts
    def elapsed(self) -> float:
        """Seconds of training of the run, earlier invocations included."""
        return self.elapsed_before + time.perf_counter() - self._t0

    def batch_at(self, step: int) -> list[int]:
        """The global batch of step ``step`` (0-based): a pure function of the seed and the step."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch not in self._epoch_batches:
            self._epoch_batches = {epoch: self.task.batches(epoch, self.cfg, self.dist)}
        return self._epoch_batches[epoch][pos]

    def train_step(self, batch: list[int]) -> StepResult:
        """One optimizer step on the global ``batch`` (this rank computes its shard); advances ``step``.

        Raises
        ------
        FloatingPointError
            The loss is not finite (on every rank alike, before the parameters change).
        """
        dist, cfg = self.dist, self.cfg
        mine = shard(batch, dist)
        self.optimizer.zero_grad(set_to_none=True)
        loss, extra = self.task.loss(mine, self.noise_gen)
        # weight this rank by its share of the global batch so the averaged gradient is the batch mean
        scale = len(mine) * dist.world_size / len(batch)
        (loss * scale).backward()
        average_gradients(self.params, dist)
        reduced = all_reduce_sum([float(loss.detach()) * len(mine)] +
                                 [float(v) * len(mine) for v in extra.values()], dist)
        batch_loss = reduced[0] / len(batch)
        if not math.isfinite(batch_loss):       # every rank sees the same value and stops before updating
            raise FloatingPointError(f"{self.task.name}: the training loss became {batch_loss} at step "
                                     f"{self.step + 1}; lower --lr or set --grad-clip (the last checkpoint is intact)")
        grad_norm = None
        if cfg.get("grad_clip"):
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, float(cfg["grad_clip"])))
        lr_used = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return StepResult(batch_loss, {k: v / len(batch) for k, v in zip(extra, reduced[1:])}, grad_norm, lr_used)

    def validate(self) -> dict:
        """Validation metrics ``{name: mean}`` over the (deterministic) validation subset, reduced over ranks;
        the same noise at every validation and in every run. Empty without validation items."""
        task, cfg, dist = self.task, self.cfg, self.dist
        if task.n_val == 0:
            return {}
        self.model.eval()
        # Items and noise do not depend on the training seed, so held-out losses of runs with different
        # seeds (and of a run continued from another) are comparable.
        items = subset_for_validation(task.n_val, cfg.get("val_max"), VALIDATION_SEED)
        mine = items[dist.rank::dist.world_size].tolist()
        gen = torch.Generator(device=dist.device)
        gen.manual_seed(rank_seed(VALIDATION_SEED, dist.rank, 3))
        bs = max(1, int(cfg["batch_size"]) // dist.world_size)
        sums: dict[str, list[float]] = {}
        with torch.no_grad():
            for i in range(0, len(mine), bs):
                for key, (s, c) in task.validate(mine[i:i + bs], gen).items():
                    acc = sums.setdefault(key, [0.0, 0.0])
                    acc[0] += float(s)
                    acc[1] += float(c)
        keys = sorted(task.val_keys)        # the same on every rank, even one without validation items
        flat = all_reduce_sum([v for k in keys for v in sums.get(k, [0.0, 0.0])], dist)
        self.model.train()
        return {k: flat[2 * i] / flat[2 * i + 1] for i, k in enumerate(keys) if flat[2 * i + 1] > 0}

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step-<step>.pt`` (rank 0; every rank contributes its random streams) and keep
        the newest ``keep_checkpoints``."""
        blobs = all_gather_bytes(_rng_blob(self.noise_gen, self.dist.device), self.dist)
        if not self.dist.is_main:
            return
        folder = self.run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        state = {"format": CHECKPOINT_FORMAT, "command": self.task.name, "step": self.step,
                 "epoch": self.step / self.steps_per_epoch, "elapsed_s": self.elapsed(),
                 "world_size": self.dist.world_size,
                 "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                 "optimizer": _to_cpu(self.optimizer.state_dict()), "scheduler": self.scheduler.state_dict(),
                 "rng": blobs}
        path = folder / f"step-{self.step:08d}.pt"
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        keep = int(self.cfg.get("keep_checkpoints") or 0)
        if keep > 0:
            for old in checkpoint_paths(self.run_dir)[:-keep]:
                old.unlink()

    # ------------------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train until the end of the schedule, ``stop_at`` or the ``time_budget``; then :meth:`finish`."""
        from tqdm.auto import tqdm

        cfg, dist = self.cfg, self.dist
        budget = parse_duration(cfg["time_budget"]) if cfg.get("time_budget") is not None else None
        self._t0 = time.perf_counter()
        window, last_log = LogWindow(), (self._t0, self.step)
        bar = tqdm(total=self.n_total, initial=self.step, desc=f"train {self.task.name}", unit="step",
                   disable=not (dist.is_main and cfg.get("progress", True)), dynamic_ncols=True)
        self.model.train()
        while self.step < self.n_total:
            result = self.train_step(self.batch_at(self.step))
            window.add(result)
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}")
            out_of_time = budget is not None and time.perf_counter() - self._t0 >= budget
            final = self._is_last_step() or out_of_time
            if final or self._due(max(1, int(cfg.get("log_every") or 1))):
                last_log = self._write_step_log(window, last_log)
                window = LogWindow()
            if final or self._due(int(cfg.get("val_every") or 0)):          # 0: only at the end
                self._write_validation(bar, result.loss)
            if final or self._due(max(1, int(cfg.get("ckpt_every") or self.n_total))):
                self.save_checkpoint()
            if final:
                break
        bar.close()
        return self.finish(with_weights=self.step >= self.n_total or budget is not None)

    def _is_last_step(self) -> bool:
        stop_at = self.cfg.get("stop_at")
        return self.step == self.n_total or (stop_at is not None and self.step >= int(stop_at))

    def _due(self, every: int) -> bool:
        """Whether an action every ``every`` steps (0: never) is due after this step."""
        return bool(every) and self.step % every == 0

    def _write_step_log(self, window: LogWindow, last_log: tuple[float, int]) -> tuple[float, int]:
        now = time.perf_counter()
        rec = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "elapsed_s": round(self.elapsed(), 3),
               "s_per_step": round((now - last_log[0]) / max(1, self.step - last_log[1]), 4)}
        rec.update(window.record(with_grad_norm=bool(self.cfg.get("grad_clip"))))
        self.log.write(rec)
        return now, self.step

    def _write_validation(self, bar, batch_loss: float) -> None:
        metrics = self.validate()
        if metrics:
            self.log.write({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                            "elapsed_s": round(self.elapsed(), 3), **{f"val_{k}": v for k, v in metrics.items()}})
            bar.set_postfix(loss=f"{batch_loss:.4f}", val=f"{metrics.get('loss', float('nan')):.4f}")

    def finish(self, with_weights: bool) -> dict:
        """Check that every rank holds the same parameters, export the weights (rank 0, when
        ``with_weights``: at the end of the schedule and after a time budget, not after ``stop_at``) and
        log the summary."""
        dist, cfg = self.dist, self.cfg
        digest = torch.tensor(list(bytes.fromhex(parameter_hash(self.model))), dtype=torch.uint8)
        hashes = [bytes(b.tolist()).hex() for b in all_gather_bytes(digest, dist)]
        if len(set(hashes)) != 1:
            raise RuntimeError(f"ranks ended with different parameters: {hashes}")
        summary = {"event": "end", "step": self.step, "total_steps": self.n_total,
                   "finished": self.step >= self.n_total, "elapsed_s": round(self.elapsed(), 3),
                   "param_hash": hashes[0], "rank_param_hashes": hashes, "world_size": dist.world_size}
        if with_weights and dist.is_main:
            info = {"name": self.run_dir.name, "stage": self.task.name, "steps": self.step,
                    "seed": int(cfg["seed"]), "world_size": dist.world_size, "data": self.task.data_summary,
                    "hyper_parameters": {k: v for k, v in cfg.items() if k != "model"}}
            self.task.export(self.run_dir / "weights", info)
            summary["weights"] = str(self.run_dir / "weights")
        self.log.write(summary)
        dist.barrier()
        return {**summary, "rank": dist.rank}


# ------------------------------------------------------------------------------------------ RNG and state
def _rng_blob(noise_gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """One uint8 tensor holding this rank's global torch RNG state(s) and its noise-generator state."""
    parts = [torch.get_rng_state(), noise_gen.get_state()]
    if device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    sizes = torch.tensor([p.numel() for p in parts], dtype=torch.int64).view(torch.uint8)
    return torch.cat([torch.tensor([len(parts)], dtype=torch.uint8), sizes, *parts])


def _restore_rng(blob: torch.Tensor, noise_gen: torch.Generator, device: torch.device) -> None:
    """Set the states written by :func:`_rng_blob`."""
    k = int(blob[0])
    sizes = blob[1:1 + 8 * k].clone().view(torch.int64).tolist()
    offset = 1 + 8 * k
    parts = []
    for s in sizes:
        parts.append(blob[offset:offset + s].clone())
        offset += s
    torch.set_rng_state(parts[0])
    noise_gen.set_state(parts[1])
    if device.type == "cuda" and len(parts) > 2:
        torch.cuda.set_rng_state(parts[2], device)


def _to_cpu(obj):
    """Optimizer state dicts with every tensor on the CPU (so a GPU run can be resumed anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
