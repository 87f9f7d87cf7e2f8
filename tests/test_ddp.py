"""DistributedDataParallel and FSDP2 (gloo over loopback, 2 processes, file store) train BitLinear
like nn.Linear: gradients are averaged across ranks and the result equals single-process training
on the global batch."""
import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bitlinear import BitLinear

WORLD = 2
STEPS = 4
GLOBAL_BATCH = 12


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(BitLinear(24, 40), nn.ReLU(), BitLinear(40, 40, bias=False), nn.GELU(),
                         BitLinear(40, 5, quant_type="ai8pc_wpc"))


def _data(seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    xs = torch.randn(STEPS, GLOBAL_BATCH, 24, generator=g) * 2
    ys = torch.randint(0, 5, (STEPS, GLOBAL_BATCH), generator=g)
    return xs, ys


def _train(model, xs, ys, on_step=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(STEPS):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xs[step]), ys[step]).backward()
        if on_step is not None:
            on_step(step)
        opt.step()
    return model


def _worker(rank: int, seed: int, out_dir: str):
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only, never the network
    # A file store: no TCP port to race for with other test runs on the machine.
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'store')}",
                            rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=30))
    try:
        model = _model(seed + rank * 7919)  # different init per rank: DDP must broadcast rank 0's
        ddp = nn.parallel.DistributedDataParallel(model)
        xs, ys = _data(seed)
        per = GLOBAL_BATCH // WORLD
        xs, ys = xs[:, rank * per:(rank + 1) * per], ys[:, rank * per:(rank + 1) * per]
        grad_mismatch = []

        def check_sync(step):
            for name, p in model.named_parameters():
                gathered = [torch.empty_like(p.grad) for _ in range(WORLD)]
                dist.all_gather(gathered, p.grad)
                if not torch.equal(gathered[0], gathered[1]):
                    grad_mismatch.append((step, name))

        _train(ddp, xs, ys, check_sync)
        fsdp_state = _fsdp_train(seed, xs, ys)
        torch.save({"state": model.state_dict(), "grad_mismatch": grad_mismatch,
                    "fsdp_state": fsdp_state}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _fsdp_train(seed, xs, ys):
    """FSDP2 (fully_shard) on a CPU mesh: each BitLinear its own unit, weights sharded by rows.
    Returns the full state dict, or a string saying why FSDP2 could not run here."""
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as e:
        return f"FSDP2 unavailable: {e}"
    import warnings
    mesh = init_device_mesh("cpu", (WORLD,))
    model = _model(seed)
    for layer in model:
        if isinstance(layer, BitLinear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert model[0].weight.to_local().shape[0] < model[0].weight.shape[0]  # really sharded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(model, xs, ys)
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v
            for k, v in model.state_dict().items()}


def test_ddp_matches_single_process(tmp_path, gen):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    seed = int(torch.randint(0, 2**31 - 10**5, (1,), generator=gen))
    ctx = mp.start_processes(_worker, args=(seed, str(tmp_path)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 90
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("DDP workers did not finish within 90 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()

    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for r in results:
        assert r["grad_mismatch"] == []
    for k, v in results[0]["state"].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, results[1]["state"][k]), k

    single = _model(seed)  # rank 0's init, which DDP broadcast
    init = {k: v.clone() for k, v in single.state_dict().items() if isinstance(v, torch.Tensor)}
    xs, ys = _data(seed)
    _train(single, xs, ys)
    for k, v in single.state_dict().items():
        if not isinstance(v, torch.Tensor):
            continue
        assert not torch.equal(v, init[k]), f"{k} did not train"
        torch.testing.assert_close(results[0]["state"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    fsdp = results[0]["fsdp_state"]
    if isinstance(fsdp, str):
        pytest.skip(fsdp)
    for k, v in single.state_dict().items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(fsdp[k], v, rtol=1e-4, atol=1e-5, msg=f"FSDP2 {k}")
