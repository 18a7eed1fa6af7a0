"""What the two training stages share: the result object and the run-folder protocol.

A run folder is continued, skipped or refused by :func:`tokenweight.train.runner.plan_run` before
any model is loaded, and written by :func:`tokenweight.train.runner.run_training` under the
folder's lock, so that the same command always does the right thing (docs/TRAINING.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunResult:
    """Outcome of a pretrain or train stage (``summary``: the run folder's ``summary.json``)."""

    out: Path
    summary: dict = field(default_factory=dict)
    already_done: bool = False

    @property
    def model(self) -> Path:
        return self.out / "model"

    def line(self, kind: str) -> str:
        """One line for the console: what was trained, how fast, the final loss."""
        s = self.summary
        if self.already_done:
            steps = s.get("steps")
            return f"{self.out}: already {kind} ({steps} steps) with these settings; nothing to do -> {self.model}"
        loss = f"; final loss {s['final_loss']:.4f}" if s.get("final_loss") is not None else ""
        plain = f" (plain {s['final_plain_loss']:.4f})" if s.get("final_plain_loss") is not None else ""
        resumed = f" (resumed from {Path(s['resumed_from']).name})" if s.get("resumed_from") else ""
        return (
            f"{kind} {s['steps']} steps{resumed}, {s['tokens']:,} tokens in {s['wall_time_s']:.1f} s "
            f"({s['tokens_per_s']:,.0f} tokens/s){loss}{plain} -> {self.model}"
        )


def plan_stage(config, command: str):
    """``(out, plan)`` of a training stage: its run folder planned from the config's settings,
    before any model is loaded (a folder with other settings is refused here)."""
    from tokenweight.train.runner import plan_run

    out = Path(config.out)
    return out, plan_run(out, {"command": command, **config.settings()}, force=config.force)
