"""Helpers every training script shares: seeding, provenance, early stopping, checkpoints."""

from __future__ import annotations

import json
import os
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Deterministic kernels trade a little speed for runs that repeat bit for bit on one machine.
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def use_threads(threads: int | None) -> int:
    """Use the given number of CPU threads (default: all cores) and return it."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def git_commit() -> str:
    """The commit of the working tree, with '-dirty' when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty.strip() else "")


@dataclass
class EarlyStopping:
    """Stop when validation loss has not improved by `min_delta` for `patience` epochs."""

    patience: int
    min_delta: float = 0.0
    best: float = float("inf")
    best_epoch: int = -1
    stale: int = field(default=0, init=False)

    def step(self, loss: float, epoch: int) -> bool:
        """Record this epoch's loss; True if it is the best so far."""
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.stale = loss, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


def save_checkpoint(path: Path, model: torch.nn.Module, model_config: dict[str, Any], meta: dict[str, Any]) -> None:
    """Weights + the config to rebuild the model + training metadata (JSON beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": model_config, "state_dict": model.state_dict()}, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(model_config, state_dict, training metadata) of a checkpoint written by save_checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(path.with_suffix(".json").read_text())
    return checkpoint["model_config"], checkpoint["state_dict"], meta
