"""The trainer's parts on a toy task (a linear model on fixed random data): one step, validation, a
checkpoint and a resume from it, each called on its own."""
from pathlib import Path

import pytest
import torch

from matchms_diffms.train import common
from matchms_diffms.train.trainer import LogWindow, StepResult, Trainer, total_steps

CFG = {**common.COMMON_DEFAULTS, "steps": 6, "batch_size": 4, "lr": 0.05, "schedule": "constant", "progress": False,
       "val_every": 0, "ckpt_every": 3, "log_every": 2}


class ToyTask(common.TrainTask):
    """y = x . w with noise drawn from the trainer's generator (so the random stream matters)."""

    name = "toy"
    val_keys = ("loss",)

    def setup(self, cfg, run_dir, dist):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(12, 3, generator=g), torch.randn(12, generator=g)
        self.model = torch.nn.Linear(3, 1)
        self.n_train, self.n_val, self.data_summary = 8, 4, {"items": 12}

    def batches(self, epoch, cfg, dist):
        return common.make_batches(self.n_train, cfg["batch_size"], cfg["seed"], epoch)

    def _loss(self, idx, generator):
        x = self.x[idx] + 0.1 * torch.randn(len(idx), 3, generator=generator)
        return ((self.model(x).squeeze(-1) - self.y[idx]) ** 2).mean()

    def loss(self, indices, generator):
        return self._loss(indices, generator), {"n": float(len(indices))}

    def validate(self, indices, generator):
        idx = [self.n_train + i for i in indices]
        return {"loss": (float(self._loss(idx, generator)) * len(idx), len(idx))}

    def export(self, directory, info):
        Path(directory).mkdir(parents=True, exist_ok=True)


def _trainer(tmp_path: Path, resume: bool = False, **cfg) -> Trainer:
    trainer = Trainer(ToyTask(), {**CFG, **cfg}, tmp_path, common.Dist())
    trainer.prepare(resume)
    return trainer


def _params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_train_step_updates_and_reports(tmp_path):
    trainer = _trainer(tmp_path)
    before = _params(trainer)
    result = trainer.train_step(trainer.batch_at(0))
    assert trainer.step == 1 and result.lr == 0.05 and result.grad_norm is None and result.extra == {"n": 4.0}
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(trainer)))
    assert trainer.batch_at(2) == common.make_batches(8, 4, 0, 1)[0]          # step 2: first batch of epoch 1


def test_validation_is_the_same_at_every_call(tmp_path):
    trainer = _trainer(tmp_path)
    first = trainer.validate()
    assert set(first) == {"loss"} and first == trainer.validate() and trainer.model.training


def test_validation_does_not_depend_on_the_training_seed(tmp_path):
    """Runs with different --seed (or one continued from another) report comparable held-out losses."""
    a, b = _trainer(tmp_path / "a", seed=0), _trainer(tmp_path / "b", seed=1)
    b.model.load_state_dict(a.model.state_dict())
    assert a.validate() == b.validate()


def test_checkpoint_and_resume_continue_bit_identically(tmp_path):
    full = _trainer(tmp_path / "full")
    for step in range(4):
        full.train_step(full.batch_at(step))
    part = _trainer(tmp_path / "part")
    for step in range(2):
        part.train_step(part.batch_at(step))
    part.save_checkpoint()
    resumed = _trainer(tmp_path / "part", resume=True)
    assert resumed.step == 2
    for step in range(2, 4):
        resumed.train_step(resumed.batch_at(step))
    assert all(torch.equal(a, b) for a, b in zip(_params(full), _params(resumed)))


def test_run_logs_windows_checkpoints_and_finishes(tmp_path):
    summary = _trainer(tmp_path).run()
    assert summary["finished"] and summary["step"] == 6 and summary["weights"] == str(tmp_path / "weights")
    assert [p.name for p in common.checkpoint_paths(tmp_path)] == ["step-00000003.pt", "step-00000006.pt"]
    recs = common.read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in recs if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in recs if "val_loss" in r] == [6]          # val_every 0: only at the end


def test_log_window_means():
    window = LogWindow()
    window.add(StepResult(1.0, {"a": 2.0}, 3.0, 0.1))
    window.add(StepResult(3.0, {"a": 4.0}, 5.0, 0.2))
    assert window.record(with_grad_norm=True) == {"loss": 2.0, "lr": 0.2, "a": 3.0, "grad_norm": 4.0}


def test_total_steps():
    assert total_steps({"steps": 5, "epochs": 9}, 10) == 5
    assert total_steps({"steps": None, "epochs": 1.5}, 3) == 5
    with pytest.raises(ValueError, match="--steps or --epochs"):
        total_steps({}, 3)
