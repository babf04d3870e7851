"""Training state saved as safetensors (never pickle): model, EMA, optimizer, RNG, epoch.

Tensors go under prefixes (``model.``, ``ema.``, ``optim.<param index>.<key>.``); everything
else (epoch, best score, optimizer hyper-parameters, the run's config) is JSON in the header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fermon.errors import UsageError
from fermon.inputs.storage import atomic_path

_JSON_KEY = "state"


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in info["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": info["param_groups"]}


def save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
    ema: torch.nn.Module | None = None,
) -> None:
    """Write the state atomically, so a kill mid-write leaves the previous epoch's state intact."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    optimizer_tensors, optimizer_info = _flatten_optimizer(optimizer.state_dict())
    tensors.update({k: v.cpu().contiguous() for k, v in optimizer_tensors.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    header = dict(info, optimizer=optimizer_info)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={_JSON_KEY: json.dumps(header)})


def load_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote; return its JSON info."""
    with safe_open(str(path), framework="pt") as handle:
        info = json.loads(handle.metadata()[_JSON_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    optimizer_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    optimizer.load_state_dict(_unflatten_optimizer(optimizer_tensors, info.pop("optimizer")))
    torch.set_rng_state(tensors["rng.torch"])
    return info


def save_weights(path: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    """Model weights alone (the best epoch so far), with JSON info."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={_JSON_KEY: json.dumps(info)})


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt") as handle:
        info = json.loads((handle.metadata() or {}).get(_JSON_KEY, "{}"))
        return {name: handle.get_tensor(name) for name in handle.keys()}, info


def save_final_ema_weights(state_path: Path, out: Path) -> None:
    """The weight EMA a run's state holds after its last epoch, as :func:`load_weights` reads weights."""
    with safe_open(str(state_path), framework="pt") as handle:
        info = json.loads(handle.metadata()[_JSON_KEY])
        prefix = "ema.module."
        tensors = {name[len(prefix) :]: handle.get_tensor(name) for name in handle.keys() if name.startswith(prefix)}
    if not tensors:
        raise UsageError(f"{state_path.parent.name}: the run kept no weight EMA (--ema-decay 0)")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={_JSON_KEY: json.dumps({"epoch": info["epoch"] + 1, "weights": "ema"})})
