"""Training through the real stack: DeepSpeed ZeRO-2 ranks started by Ray Train on CPU (gloo)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_cfg(model, out, **kw):
    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig

    base = {
        "objective": "genrm_cot", "model": model, "output_dir": str(out), "launcher": "ray",
        "data": {"task": "last_letter", "num_problems": 200, "val_fraction": 0.1},
        "max_steps": 30, "micro_batch_size": 8, "lr": 3e-3, "log_every": 5, "checkpoint_every": 10,
        "ray": {"num_workers": 2, "cpus_per_worker": 0.5},
    }
    for k, v in kw.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return from_dict(TrainConfig, base)


def test_two_deepspeed_workers_under_ray_train_loss_falls(ray_session, tiny_model_dir, tmp_path):
    from genrm_rl.training.launch import run_training

    out = tmp_path / "cot"
    result = run_training(_train_cfg(tiny_model_dir, out))
    assert result["world_size"] == 2 and result["step"] == 30
    losses = [m["loss"] for m in _metrics(out) if "loss" in m]
    assert losses[-1] < losses[0] * 0.8, losses
    ranks = [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert (out / "tb").is_dir() and result["val_loss"] is not None
    # the export loads through the same path as any model, and the verifier can use it
    from genrm_rl.verifier import VerifierConfig, build_scorer

    r = build_scorer(VerifierConfig(model=str(out / "model"), mode="direct")).score([("q", "s")])
    assert 0 <= r[0].score <= 1


@pytest.mark.slow
def test_zero3_ranks_never_hold_the_whole_model_and_resume(ray_session, tiny_model_dir, tmp_path):
    """ZeRO-3 on two ranks: `from_pretrained` runs under DeepSpeed's partitioned init, so right after
    loading each rank holds no whole parameter, only its half; the job trains, exports a whole model
    (gathered), and a longer re-run resumes from the sharded checkpoint."""
    from safetensors import safe_open

    from genrm_rl.training.launch import run_training

    out = tmp_path / "z3"
    cfg = _train_cfg(tiny_model_dir, out, max_steps=10, checkpoint_every=10, tensorboard=False,
                     deepspeed={"zero_stage": 3})
    result = run_training(cfg)
    assert result["world_size"] == 2 and result["step"] == 10
    ranks = [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank*.json"))]
    total = ranks[0]["params_total"]
    for r in ranks:
        assert r["params_whole_at_load"] == 0, r  # nothing materialised whole on any rank
        assert abs(r["params_partition_at_load"] - total / 2) <= 0.01 * total, r
    losses = [m["loss"] for m in _metrics(out) if "loss" in m]
    assert all(loss == loss for loss in losses) and losses[-1] < losses[0], losses
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        exported = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)
    assert exported >= total * 0.9  # whole tensors (tied embeddings may be stored once)
    again = run_training(_train_cfg(tiny_model_dir, out, max_steps=14, checkpoint_every=10, tensorboard=False,
                                    deepspeed={"zero_stage": 3}))
    assert again["resumed_from"] == 10 and again["step"] == 14


def test_orm_baseline_trains_on_ray(ray_session, tiny_model_dir, tmp_path):
    from ray.util.state import list_actors

    from genrm_rl.training.launch import run_training
    from genrm_rl.verifier import VerifierConfig, build_scorer

    def watchers():  # Ray Train's node-drain watcher: nothing to watch on a one-machine cluster
        return len(list_actors(filters=[("class_name", "=", "PreemptionWatcher")], limit=1000))

    before = watchers()
    out = tmp_path / "orm"
    result = run_training(_train_cfg(tiny_model_dir, out, objective="orm", max_steps=10, checkpoint_every=0))
    assert result["step"] == 10
    assert watchers() == before
    orm = build_scorer(VerifierConfig(model=str(out / "model"), mode="orm"))
    assert 0 < orm.score([("q", "s")])[0].score < 1


def _run_job(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "jobs.train_genrm", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def _checkpoint_steps(out: Path) -> list[int]:
    """Steps of the checkpoints Ray Train has registered for this output_dir (its manager's snapshot)."""
    snap = list((out / "ray").glob("*/checkpoint_manager_snapshot.json"))
    if not snap:
        return []
    text = snap[0].read_text()
    import re

    return sorted({int(m) for m in re.findall(r"step-(\d{9})", text)})


def _wait(cond, timeout, proc):
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    return cond()


# What Ray Train, DeepSpeed and transformers print by default, once or more per training job
FRAMEWORK_NOISE = ("Requesting resources", "training worker group", "Setting up process group",
                   "Reporting training result", "Checkpoint successfully created", "built successfully",
                   "before it has started", "Loading weights", "Writing model shards")


def test_training_job_console_shows_progress_not_framework_noise(ray_session, tiny_model_dir, tmp_path):
    """`genrm-rl train` under Ray: the console has the job's own progress bar and result (and
    checkpoints are still written), not the frameworks' per-run INFO lines and per-load bars."""
    out = tmp_path / "quiet"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    proc = _run_job([f"model={tiny_model_dir}", f"output_dir={out}", "data.task=last_letter", "data.num_problems=40",
                     "max_steps=6", "micro_batch_size=8", "checkpoint_every=3", "log_every=3", "launcher=ray",
                     "ray.num_workers=1", "ray.cpus_per_worker=0.5", "tensorboard=false"], env)
    console, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, console[-3000:]
    assert "train quiet (genrm_cot)" in console and '"step": 6' in console, console[-3000:]
    assert 3 in _checkpoint_steps(out) or 6 in _checkpoint_steps(out)
    for noise in FRAMEWORK_NOISE:
        assert noise not in console, (noise, console[-3000:])


@pytest.mark.slow
def test_killed_job_resumes_from_its_checkpoint(ray_session, tiny_model_dir, tmp_path):
    """SIGKILL the training job (driver and its Ray workers) at several moments, one of them inside a
    checkpoint save (the save pauses on purpose between writing and committing): every re-run of the
    same command resumes from the newest complete checkpoint, never crashes on a torn one, and the
    last run finishes the remaining steps only."""
    out = tmp_path / "resume"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
           "GENRM_CHECKPOINT_PAUSE_S": "2"}
    args = [f"model={tiny_model_dir}", f"output_dir={out}", "data.task=last_letter", "data.num_problems=200",
            "max_steps=60", "micro_batch_size=8", "checkpoint_every=10", "log_every=5", "launcher=ray",
            "ray.num_workers=2", "ray.cpus_per_worker=0.5", "tensorboard=false"]
    kills = []
    for moment in ("inside the first save", "between saves", "inside a later save"):
        proc = _run_job(args, env)
        before = set(_checkpoint_steps(out))
        if moment.startswith("inside"):  # a checkpoint's files are in storage but it is not registered yet
            def uploading(before=before):
                dirs = {int(p.name[5:]) for p in (out / "ray").glob("*/step-*")}
                return bool(dirs - before - set(_checkpoint_steps(out)))
            ok = _wait(uploading, 240, proc)
        else:
            ok = _wait(lambda before=before: set(_checkpoint_steps(out)) - before, 240, proc)
            time.sleep(1)
        assert ok, proc.communicate()[0][-3000:] if proc.poll() is not None else moment
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append((moment, _checkpoint_steps(out)))
    registered = kills[-1][1]
    assert registered and all(s % 10 == 0 for s in registered), kills
    newest = max(registered)
    resumed = _run_job(args, {**env, "GENRM_CHECKPOINT_PAUSE_S": "0"})
    log, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, log[-3000:]
    assert f"resumed from checkpoint at step {newest}" in log, (kills, log[-2000:])
    starts = [m for m in _metrics(out) if m.get("event") == "start"]
    assert starts[0]["step"] == 0 and starts[-1]["resumed_from"] == newest
    end = [m for m in _metrics(out) if m.get("event") == "end"][-1]
    assert end["step"] == 60 and (out / "model" / "model.safetensors").is_file()
    # Ray Train keeps keep_checkpoints (2) of them, the newest included
    assert len(_checkpoint_steps(out)) <= 2 and max(_checkpoint_steps(out)) == 60


@pytest.mark.slow
def test_killed_worker_is_restarted_and_continues_from_the_last_checkpoint(ray_session, tiny_model_dir, tmp_path):
    """FailureConfig(max_failures=1): SIGKILL one of the two DeepSpeed ranks once a checkpoint is
    registered. Ray Train restarts the worker group inside the same `fit()`, the new group resumes from
    that checkpoint (not step 0), and the job ends where an uninterrupted run ends, loss included."""
    import threading

    from genrm_rl.training.launch import run_training

    kw = {"max_steps": 40, "checkpoint_every": 10, "tensorboard": False}
    straight = tmp_path / "straight"
    run_training(_train_cfg(tiny_model_dir, straight, **kw))
    out = tmp_path / "killed"
    killed: dict = {}

    def kill_rank1_after_a_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            rank1 = out / "ranks" / "rank1.json"
            if _checkpoint_steps(out) and rank1.is_file():
                killed["after"] = _checkpoint_steps(out)
                os.kill(json.loads(rank1.read_text())["pid"], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank1_after_a_checkpoint, daemon=True)
    killer.start()
    result = run_training(_train_cfg(tiny_model_dir, out, ray={"max_failures": 1}, **kw))
    killer.join(timeout=5)
    assert killed, "no checkpoint was registered to kill after"
    starts = [m for m in _metrics(out) if m.get("event") == "start"]
    assert len(starts) == 2 and starts[0]["resumed_from"] is None, starts
    assert starts[1]["resumed_from"] in killed["after"] and starts[1]["resumed_from"] >= 10, (starts, killed)
    assert result["step"] == 40 and result["resumed_from"] == starts[1]["resumed_from"]

    def late_loss(run):  # the same batches in the same order: resumed data position, same seed
        losses = [m["loss"] for m in _metrics(run) if "loss" in m and m.get("step", 0) >= 30]
        return sum(losses) / len(losses)

    assert abs(late_loss(out) - late_loss(straight)) <= 0.1 * late_loss(straight), (late_loss(out), late_loss(straight))


def test_rerunning_a_finished_job_keeps_its_checkpoint(ray_session, tiny_model_dir, tmp_path):
    """Running a finished job again (twice) trains nothing, reports no duplicate checkpoint (two
    entries naming one directory let retention delete it, so the third run found a corrupted run)
    and still resumes from the same step."""
    from genrm_rl.training.launch import run_training

    out = tmp_path / "again"
    cfg = _train_cfg(tiny_model_dir, out, max_steps=10, checkpoint_every=5, keep_checkpoints=2, tensorboard=False,
                     ray={"num_workers": 1, "cpus_per_worker": 1})
    assert run_training(cfg)["step"] == 10
    for _ in range(2):
        again = run_training(cfg)
        assert again["step"] == 10 and again["resumed_from"] == 10
        assert 10 in _checkpoint_steps(out) and list((out / "ray").glob("*/step-000000010*"))


def test_one_rank_in_process_trains_the_weights_a_ray_train_worker_does(ray_session, tiny_model_dir, tmp_path):
    """`reproduce`'s train_launcher: local swaps Ray Train for this process when there is one rank. With
    the threads a worker gets (its CPUs), DeepSpeed steps, checkpoints and exports the same weights."""
    import torch
    from safetensors.torch import load_file

    from genrm_rl.training.launch import run_training

    threads = torch.get_num_threads()
    kw = dict(objective="genrm_direct", max_steps=8, checkpoint_every=4, ray={"num_workers": 1, "cpus_per_worker": 1.0})
    try:
        run_training(_train_cfg(tiny_model_dir, tmp_path / "ray", **kw))
        run_training(_train_cfg(tiny_model_dir, tmp_path / "here", launcher="local", torch_threads=1, **kw))
    finally:
        torch.set_num_threads(threads)
    by_ray, here = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("ray", "here"))
    assert by_ray.keys() == here.keys() and all(torch.equal(by_ray[k], here[k]) for k in by_ray)
    assert not torch.equal(by_ray["model.norm.weight"], load_file(Path(tiny_model_dir) / "model.safetensors")["model.norm.weight"])


def test_local_checkpoints_are_committed_after_every_rank_wrote(tiny_model_dir, tmp_path):
    """Without Ray: a half-written checkpoint (no COMPLETE marker, as a kill inside a save leaves it)
    is never resumed from, and pruning keeps the newest complete ones."""
    from genrm_rl.training.checkpoint import Checkpointer
    from genrm_rl.training.launch import run_training

    out = tmp_path / "local"
    cfg = _train_cfg(tiny_model_dir, out, launcher="local", engine="torch", max_steps=20, checkpoint_every=5,
                     keep_checkpoints=2, tensorboard=False)
    run_training(cfg)
    ckpts = Checkpointer(out, 2, 0, under_ray=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-15", "step-20"]
    assert ckpts.newest_local().name == "step-20"
    # a save killed half-way: files there, no marker; and a renamed one whose marker is missing
    torn = out / "checkpoints" / "step-25"
    torn.mkdir()
    (torn / "state").mkdir()
    assert ckpts.newest_local().name == "step-20"
    result = run_training(_train_cfg(tiny_model_dir, out, launcher="local", engine="torch", max_steps=25,
                                     checkpoint_every=5, keep_checkpoints=2, tensorboard=False))
    assert result["resumed_from"] == 20 and result["step"] == 25


@pytest.mark.slow
def test_two_node_cluster_strict_spread_resumes_from_storage_alone(tiny_model_dir, tmp_path):
    """A two-node Ray cluster on this machine (ray.cluster_utils.Cluster): STRICT_SPREAD puts the
    two DeepSpeed ranks on different nodes and they train together. Checkpoints go to a
    `storage_path` (the stand-in for cloud storage); the job's own directory, everything a node wrote
    locally, is then deleted, and the re-run resumes from the reported checkpoint alone."""
    out, storage = tmp_path / "spread", tmp_path / "storage"
    script = f"""
import json, shutil, ray
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
assert len([n for n in ray.nodes() if n["Alive"]]) == 2
from genrm_rl.config import from_dict
from genrm_rl.training.config import TrainConfig
from genrm_rl.training.launch import run_training
def cfg(steps):
    return from_dict(TrainConfig, {{"objective": "genrm_direct", "model": {tiny_model_dir!r}, "output_dir": {str(out)!r},
        "data": {{"task": "last_letter", "num_problems": 100}}, "max_steps": steps, "micro_batch_size": 8, "log_every": 2,
        "checkpoint_every": 4, "tensorboard": False,
        "ray": {{"num_workers": 2, "cpus_per_worker": 0.5, "placement_strategy": "STRICT_SPREAD",
                 "storage_path": {str(storage)!r}}}}})
first = run_training(cfg(8))
ranks = [json.load(open(f"{str(out)}/ranks/rank{{r}}.json")) for r in (0, 1)]
shutil.rmtree({str(out)!r})  # every node-local file of the first run is gone
second = run_training(cfg(12))
print("RESULT", json.dumps({{"first": first, "second": second, "ranks": ranks}}))
ray.shutdown()
cluster.shutdown()
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    ranks = found["ranks"]
    assert ranks[0]["node_id"] != ranks[1]["node_id"] and None not in [r["node_id"] for r in ranks]
    assert found["first"]["step"] == 8 and found["second"]["resumed_from"] == 8 and found["second"]["step"] == 12
    assert list(storage.glob("*/step-*")), "checkpoints were not written to storage_path"
    assert not (out / "ray").exists() and (out / "model" / "model.safetensors").is_file()
    assert [m for m in _metrics(out) if m.get("event") == "end"][-1]["step"] == 12


@pytest.mark.slow
def test_ray_job_submit_to_a_local_head(tiny_model_dir, tmp_path):
    """`ray start --head` + `ray job submit --working-dir . -- python -m jobs.train_genrm ...`, with
    Ray's token authentication on. The head runs in its own process group so the test can stop it
    without `ray stop` (which would also stop this session's cluster)."""
    import secrets

    from genrm_rl.runtime import free_port

    bin_dir = Path(sys.executable).parent
    ray_bin = str(bin_dir / "ray")
    port, dash = free_port(), free_port()
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"rayjob{port}"  # short: unix socket paths are length-limited
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
                             "--dashboard-host=127.0.0.1", "--num-cpus=2", "--include-dashboard=true",
                             # this session's own cluster already holds Ray's default agent ports
                             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                             f"--temp-dir={temp}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out = tmp_path / "submitted"
        sub = None
        for _ in range(30):  # the dashboard takes a few seconds to accept jobs
            sub = subprocess.run(
                [ray_bin, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir", str(REPO), "--",
                 "python", "-m", "jobs.train_genrm", f"model={tiny_model_dir}", f"output_dir={out}",
                 "objective=genrm_direct", "data.num_problems=100", "max_steps=6", "micro_batch_size=8",
                 "ray.num_workers=2", "ray.cpus_per_worker=0.5", "tensorboard=false"],
                env=env, capture_output=True, text=True, timeout=480, cwd=REPO)
            transient = ("Connection" in sub.stderr + sub.stdout) or ("No available agent" in sub.stderr)
            if sub.returncode == 0 or "succeeded" in sub.stdout or not transient:
                break
            time.sleep(2)
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        assert "succeeded" in sub.stdout
        assert (out / "model" / "model.safetensors").is_file()
        assert [m for m in _metrics(out) if m.get("event") == "end"][-1]["step"] == 6
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
