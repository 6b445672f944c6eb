"""Several processes: joining torchrun's process group, and all-gather helpers for losses whose RDM spans the global batch under ``torch.distributed``.

``gather_with_grad`` concatenates every rank's ``(b_r, ...)`` tensor into the
global ``(sum_r b_r, ...)`` tensor in rank order, keeping the graph only for
the local part. Its backward returns the gradient of the local slice times the
world size. Why: every rank computes the *same* global loss ``L`` from the
gathered tensor, so rank ``r``'s gradient is ``world_size * dL/d(local part)``;
after data-parallel averaging (DDP's all-reduce *mean*) each parameter
receives ``sum_r dL/d(part r) * d(part r)/dθ``, exactly the single-process
gradient of ``L`` on the concatenated batch. No collective runs in backward.

Ranks may hold different batch sizes; they are padded to the largest for the
collective and trimmed afterwards.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "world_size_and_rank", "gather_with_grad", "gather_no_grad", "setup_process_group",
           "pick_device", "wrap_data_parallel"]


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size_and_rank() -> tuple[int, int]:
    """``(world_size, rank)``; ``(1, 0)`` outside ``torch.distributed``."""
    if not is_distributed():
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


def _all_gather_padded(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """All ranks' ``x (b_r, ...)`` concatenated in rank order, and the sizes ``b_r``."""
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    largest = max(sizes)
    local = x.contiguous()
    if local.shape[0] < largest:
        pad = local.new_zeros((largest - local.shape[0], *local.shape[1:]))
        local = torch.cat([local, pad])
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sizes


class _GatherLocalGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        gathered, sizes = _all_gather_padded(x)
        ctx.start = sum(sizes[:rank])
        ctx.size = sizes[rank]
        ctx.world = world
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # see the module docstring for why the local slice is scaled by the world size
        return grad[ctx.start : ctx.start + ctx.size] * ctx.world


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Global batch ``(sum_r b_r, ...)`` from every rank's ``x (b_r, ...)``; gradient flows to the local part.

    Outside ``torch.distributed`` (or with one rank) returns ``x`` unchanged.
    """
    if not is_distributed():
        return x
    return _GatherLocalGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Global batch of a tensor that needs no gradient (stimulus ids, teacher features)."""
    if not is_distributed():
        return x
    with torch.no_grad():
        return _all_gather_padded(x.detach())[0]


def setup_process_group(mode: bool | str) -> tuple[int, int, bool]:
    """``(world size, rank, whether this call created the process group)`` for the trainer's ``distributed``
    argument: ``"auto"`` joins torchrun's group when ``WORLD_SIZE > 1``, ``True`` requires it, ``False`` never.
    NCCL where CUDA exists, gloo otherwise."""
    if mode not in ("auto", True, False):
        raise ValueError(f"distributed must be 'auto', True or False, got {mode!r}")
    if mode is False or not dist.is_available():
        return 1, 0, False
    if dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or mode is True:
        if "MASTER_ADDR" not in os.environ:
            raise ValueError("distributed training needs torchrun's environment (MASTER_ADDR, RANK, WORLD_SIZE)")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        return dist.get_world_size(), dist.get_rank(), True
    return 1, 0, False


def pick_device(device: str | torch.device | None, world: int) -> torch.device:
    """``device`` if given (checked to exist here: ``rdl_neuro.devices.check_device``), else CUDA when
    available (``cuda:LOCAL_RANK`` under torchrun), else CPU."""
    if device is not None:
        from rdl_neuro.devices import check_device

        return check_device(device)
    if torch.cuda.is_available():
        if world > 1:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cuda")
    return torch.device("cpu")


def wrap_data_parallel(model: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` with more than one rank, else ``model`` itself."""
    if world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
