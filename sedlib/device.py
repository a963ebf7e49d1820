"""Which torch device a run uses (the params file's ``device``), and how many CPU cores it may use."""

import os

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error that says what to set."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no GPU; set device: auto or cpu")
    return torch.device(device)


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform has one, e.g. not macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
