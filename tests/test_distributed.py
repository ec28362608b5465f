"""Data parallel: one DDP step on 2 CPU processes (gloo) equals one single-process step.

Two ranks, started with torch.multiprocessing and set up from torchrun's environment
variables, each take their shard of one global batch, gather the projections with
`gathered_views` and compute NT-Xent (no mask, false negatives eliminated, attracted; the
mask built on the gathered labels). Their loss, gradients (after DDP's averaging) and the
weights after one SGD step must equal those of one process on the whole batch. A gather
whose backward keeps only the local slice (lightly issue 1977) gives half the gradient:
the test shows that too, so it would catch the bug.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pipeline import distributed, runtime
from pipeline.losses import nt_xent, same_label_mask

WORLD, GLOBAL_BATCH, DIM = 2, 12, 10
CASES = {"plain": None, "eliminate": "eliminate", "attract": "attract"}


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views (GLOBAL_BATCH, DIM) and labels with repeats, so the masks flag pairs."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    x2 = x + 0.3 * torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    return x, x2, torch.randint(0, 3, (GLOBAL_BATCH,), generator=gen)


def model() -> nn.Module:
    """A small MLP (no BatchNorm: torch's SyncBatchNorm has no CPU kernel)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, 8))


def loss_of(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, mode: str | None) -> torch.Tensor:
    mask = same_label_mask(labels) if mode else None
    return nt_xent(z1, z2, temperature=0.5, fn_mask=mask, fn_mode=mode or "eliminate")


def step(net: nn.Module, forward: nn.Module, x1, x2, labels, mode, gather) -> dict:
    """Loss, gradients and weights after one SGD step; `gather` maps the local (z1, z2, y) to the global ones."""
    net.zero_grad()
    z1, z2 = forward(torch.cat([x1, x2])).chunk(2)  # one forward for both views, as pretrain does
    loss = loss_of(*gather(z1, z2, labels), mode)
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    with torch.no_grad():
        after = [p - 0.1 * g for p, g in zip(net.parameters(), grads, strict=True)]
    return {"loss": loss.detach(), "grads": grads, "after": after}


def naive_gather(z1, z2, labels):
    """The known-bad gather: other ranks' slices without gradient, the local slice with it."""
    def one(z):
        parts = list(distributed.gather(z.detach()).chunk(distributed.world_size()))
        parts[distributed.rank()] = z
        return torch.cat(parts)

    return one(z1), one(z2), distributed.gather(labels)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    me = distributed.init_from_env("cpu", timeout_s=60)
    assert (me.rank, me.world_size, distributed.is_main()) == (rank, WORLD, rank == 0)
    x1, x2, labels = global_batch()
    idx = distributed.shard(torch.arange(GLOBAL_BATCH))
    assert torch.equal(distributed.gather(idx), torch.arange(GLOBAL_BATCH))  # shards tile the batch in order
    results = {}
    for name, mode in CASES.items():
        for gather in (distributed.gathered_views, naive_gather):
            net = model()
            ddp = distributed.wrap(net)
            results[name, gather.__name__] = step(net, ddp, x1[idx], x2[idx], labels[idx], mode, gather)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    distributed.teardown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    # fork, not spawn: the ranks inherit the imported torch instead of importing it again
    # (3 s less on 2 cores); they run one thread each, so no OpenMP pool crosses the fork.
    mp.start_processes(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def single_process(mode: str | None) -> dict:
    x1, x2, labels = global_batch()
    net = model()
    return step(net, net, x1, x2, labels, mode, lambda *t: t)


def close(a: list[torch.Tensor], b: list[torch.Tensor], scale: float = 1.0) -> bool:
    return all(torch.allclose(x * scale, y, atol=1e-6, rtol=1e-5) for x, y in zip(a, b, strict=True))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(CASES))
def test_ddp_step_equals_single_process(ranks, case):
    want = single_process(CASES[case])
    for got in (r[case, "gathered_views"] for r in ranks):
        assert torch.allclose(got["loss"], want["loss"], atol=1e-6)
        assert close(got["grads"], want["grads"])
        assert close(got["after"], want["after"])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(CASES))
def test_gather_without_gradient_sum_halves_the_gradient(ranks, case):
    want = single_process(CASES[case])
    got = ranks[0][case, "naive_gather"]
    assert torch.allclose(got["loss"], want["loss"], atol=1e-6)  # the forward is right ...
    assert not close(got["grads"], want["grads"])  # ... the gradient is not:
    assert close(got["grads"], want["grads"], scale=WORLD)  # it is 1 / world_size of the true one


def test_the_batch_has_false_negatives_across_shards():
    """Precondition of the masked cases: the global mask flags pairs that lie on different ranks."""
    _, _, labels = global_batch()
    half = GLOBAL_BATCH // 2
    full = same_label_mask(labels)
    cross = full[:half, half:GLOBAL_BATCH]  # view 1 of shard 0 against view 1 of shard 1
    assert cross.any()


def test_single_process_helpers_are_identities():
    z = torch.randn(4, 3, requires_grad=True)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gathered_views(z, z)[0] is z
    assert torch.equal(distributed.shard(torch.arange(6)), torch.arange(6))
    assert distributed.wrap(nn.Linear(2, 2)).__class__ is nn.Linear
    assert isinstance(distributed.sync_batchnorm(nn.BatchNorm1d(2)), nn.BatchNorm1d)
    assert distributed.rank_seed(7) == 7


def test_torchrun_command_launches_one_rank_per_slurm_gpu(monkeypatch):
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    assert distributed.allocated_gpus() == 4
    cmd = distributed.torchrun_command("pipeline.pretrain", ["--seed", "0"], 4)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "pipeline.pretrain", "--seed", "0"]
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    assert distributed.allocated_gpus() == 1


# ---- the pretrain stage on 2 ranks -----------------------------------------------------------
STAGE_CASES = {
    "simclr_oracle": {"loss": "nt_xent", "false_negatives": "oracle"},
    "acl": {"loss": "acl", "attack": {"eps": 8, "steps": 1, "step_size": 1.0}},  # dual BN, two forwards, inner attack
    "supervised": {"loss": "ce"},
}


def stage_cfg(method: dict) -> tuple:
    from pipeline.config import PretrainConfig, from_dict
    from tests.conftest import pretrain_cfg

    raw = pretrain_cfg(method, {"epochs": 1, "batch_size": 64})
    return from_dict(PretrainConfig, raw, "pretrain"), json.dumps(raw)


def run_stage(name: str, data_dir: Path, out: Path) -> tuple[nn.ModuleDict, dict]:
    """pretrain.run for one case; returns what `train_and_save` trained on this rank, and run's metrics."""
    from pipeline.pretrain import loop  # `run` looks `train_and_save` up in its own module

    trained = {}
    real = loop.train_and_save

    def spy(*args, **kwargs):
        trained["nets"], metrics = real(*args, **kwargs)
        return trained["nets"], metrics

    loop.train_and_save = spy
    try:
        cfg, raw = stage_cfg(STAGE_CASES[name])
        metrics = loop.run(cfg, raw, 0, data_dir, None, out / name / "encoder.pt", out / name / "metrics.json", threads=1)
    finally:
        loop.train_and_save = real
    return trained["nets"], metrics


def _stage_worker(rank: int, ports: list[int], data_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1")
    results = {}
    for name, port in zip(STAGE_CASES, ports, strict=True):
        os.environ["MASTER_PORT"] = str(port)  # one job per case: a fresh rendezvous, as torchrun gives each job
        nets, metrics = run_stage(name, Path(data_dir), Path(out) / f"rank{rank}")  # each rank its own folder: who writes?
        results[name] = {"params": {k: p.detach().clone() for k, p in nets.named_parameters()}, "metrics": json.dumps(metrics)}
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def stage_ranks(tmp_path_factory, digits_dir) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp_stage")
    with contextlib.ExitStack() as held:  # bound together, so the ports are distinct
        sockets = [held.enter_context(socket.socket()) for _ in STAGE_CASES]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in sockets]
    mp.start_processes(_stage_worker, args=(ports, str(digits_dir), str(out)), nprocs=WORLD, join=True, start_method="fork")
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(STAGE_CASES))
def test_pretrain_on_two_ranks_keeps_replicas_equal_and_only_rank0_writes(stage_ranks, name):
    out, (rank0, rank1) = stage_ranks
    for key, p in rank0[name]["params"].items():  # DDP averaged the same gradients into the same weights
        torch.testing.assert_close(rank1[name]["params"][key], p, rtol=0, atol=1e-6, msg=key)
    metrics = json.loads(rank0[name]["metrics"])
    assert metrics["world_size"] == WORLD and 0 <= metrics["knn_acc"] <= 1
    assert (out / "rank0" / name / "encoder.pt").exists() and not (out / "rank0" / name / "checkpoint.pt").exists()
    assert json.loads(rank1[name]["metrics"]) == {"rank": 1} and not (out / "rank1" / name).exists()


def test_pretrain_on_two_ranks_masks_false_negatives_over_the_global_batch(stage_ranks, digits_dir, tmp_path):
    """Oracle false negatives flagged per anchor equal one process's on the same global batches.

    On shards of 32 an anchor would see about half as many same-class samples as in the
    global batch of 64: the mask must be built after the gather.
    """
    _, (rank0, _) = stage_ranks
    _, single = run_stage("simclr_oracle", digits_dir, tmp_path)
    ddp_epoch, single_epoch = json.loads(rank0["simclr_oracle"]["metrics"])["history"][0], single["history"][0]
    for key in ("fn_per_anchor", "fn_precision", "fn_recall"):
        assert ddp_epoch[key] == single_epoch[key], key
    assert single["world_size"] == 1


def test_one_gpu_stage_says_when_its_job_holds_several(monkeypatch, capsys):
    from pipeline import evaluate

    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    assert runtime.warn_if_gpus_idle("evaluate")
    assert "holds 4 GPUs but evaluate runs on one" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # main() warns first, then argparse stops on the missing arguments
        evaluate.main([])
    assert "evaluate runs on one" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    assert not runtime.warn_if_gpus_idle("evaluate") and capsys.readouterr().err == ""
