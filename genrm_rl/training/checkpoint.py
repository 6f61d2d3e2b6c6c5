"""Resumable training checkpoints that are complete or absent, never torn.

Under Ray Train (`launcher: ray`): every rank writes its DeepSpeed shard (rank 0 also the module
states and the data position) to a local temporary directory and reports it with
`ray.train.report(..., checkpoint=...)`. Ray merges the ranks' files into one checkpoint
directory in `storage_path` (a local path or a cloud URI) and registers it only once every rank
has reported, so a kill during a save leaves the previous checkpoint as the latest; retention is
Ray's `CheckpointConfig(num_to_keep)`, which never deletes the newest. A restarted worker group
(`FailureConfig(max_failures)`) or a re-run of the job (same run name and storage) resumes from
`ray.train.get_checkpoint()`, so nothing is read from a node's local disk.

Without Ray (`launcher: local`, one node or a shared file system): the files go to
`output_dir/checkpoints/.step-N.partial`, and after every rank has written, rank 0 marks the
directory complete and renames it to `step-N`; resume takes the newest complete one and pruning
only ever removes older complete ones.

`GENRM_CHECKPOINT_PAUSE_S` (tests only) sleeps between writing a checkpoint and committing it,
so a test can kill a job inside a save.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

TAG = "state"
COMPLETE = "COMPLETE"


def _pause_for_tests() -> None:
    delay = float(os.environ.get("GENRM_CHECKPOINT_PAUSE_S", "0") or 0)
    if delay > 0:
        time.sleep(delay)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class Checkpointer:
    def __init__(self, output_dir: str | Path, keep: int, rank: int, under_ray: bool):
        self.dir = Path(output_dir) / "checkpoints"
        self.keep, self.rank, self.under_ray = max(1, keep), rank, under_ray
        self.restored_name: str | None = None
        """Directory name of the Ray checkpoint this run resumed from."""

    # ---- restore -----------------------------------------------------------------------------
    def restore(self, engine) -> dict | None:
        """Load the newest complete checkpoint into `engine`; its data position, or None."""
        if self.under_ray:
            import ray.train

            checkpoint = ray.train.get_checkpoint()
            if checkpoint is None:
                return None
            self.restored_name = Path(checkpoint.path).name
            with checkpoint.as_directory() as path:
                if not (Path(path) / TAG).is_dir():
                    return None
                _, client = engine.load_checkpoint(path, tag=TAG)
            return client
        newest = self.newest_local()
        if newest is None:
            return None
        _, client = engine.load_checkpoint(str(newest), tag=TAG)
        return client

    def newest_local(self) -> Path | None:
        done = [p for p in self.dir.glob("step-*") if (p / COMPLETE).is_file()]
        return max(done, key=lambda p: int(p.name[5:])) if done else None

    # ---- save --------------------------------------------------------------------------------
    def save(self, engine, position: dict, metrics: dict, extra=None, name: str | None = None) -> None:
        """Write a checkpoint of `engine` at `position` ({"step", "epoch", "micro"}). `extra(dir)`, if
        given, adds files on rank 0 (the final HF export) so they travel with the checkpoint."""
        step = position["step"]
        if self.under_ray:
            import ray.train

            with tempfile.TemporaryDirectory(prefix="genrm-ckpt-") as tmp:
                engine.save_checkpoint(tmp, tag=TAG, client_state=dict(position))
                if extra is not None and self.rank == 0:
                    extra(Path(tmp))
                _pause_for_tests()
                ray.train.report({"step": step, **metrics}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=name or f"step-{step:09d}")
            return
        partial, final = self.dir / f".step-{step}.partial", self.dir / f"step-{step}"
        if self.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        _barrier()
        engine.save_checkpoint(str(partial), tag=TAG, client_state=dict(position))
        if extra is not None and self.rank == 0:
            extra(partial)
        _barrier()  # every rank's shard is on disk before the checkpoint counts
        _pause_for_tests()
        if self.rank == 0:
            (partial / COMPLETE).write_text(str(step))
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            self._prune()
        _barrier()

    def _prune(self) -> None:
        done = sorted((p for p in self.dir.glob("step-*") if (p / COMPLETE).is_file()), key=lambda p: int(p.name[5:]))
        for old in done[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.dir.glob(".step-*.partial"):  # left by a run killed inside a save
            shutil.rmtree(stale, ignore_errors=True)
