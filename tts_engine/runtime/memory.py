"""The engine's GPU memory at start-up, part by part.

    weights     the talker, predictor and codec decoder (live tensors after loading)
    rows        the row pool (KV, frame buffers, decoder state) and the prefill staging
                area (live tensors after they are allocated)
    graphs      the CUDA graphs' private memory pool (what the allocator holds after the
                capture beyond what it held before, its cache emptied both times)
    workspace   activations and the allocator's cache at the start-up peak: the peak of
                reserved memory less the parts above

weights + rows + graphs + workspace = the peak reserved during start-up (what the
process held from the driver at its largest); the CUDA context comes on top of it.

`MemoryProbe` samples torch's caching allocator at points of the start-up;
`account_of` is arithmetic on those samples alone, so it is checked without a GPU.
On a CPU nothing is measured: every sample, and so every part, is 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

MIB = 2**20
POINTS = ("start", "loaded", "rows", "before_capture", "captured", "ready")
PARTS = {  # the parts /metrics exports: name -> what it holds
    "weights": "model weights: talker, predictor, codec decoder",
    "rows": "the batch rows (KV cache, frame buffers, decoder state) and the prefill staging area",
    "graphs": "the CUDA graphs' private memory pool",
    "workspace": "activations and allocator cache at the start-up peak",
}


@dataclass(frozen=True)
class MemorySample:
    allocated: int  # bytes of live tensors
    reserved: int  # bytes the caching allocator holds from the driver


@dataclass(frozen=True)
class MemoryAccount:
    device: str
    rows: int
    positions: int
    weights_mib: float
    rows_mib: float
    graphs_mib: float
    workspace_mib: float
    reserved_mib: float  # held at ready
    peak_reserved_mib: float  # held at the start-up's peak
    device_total_mib: float
    device_free_mib: float  # at ready, whatever else runs on the card
    row_pool_mib: float  # the row pool's tensors by their sizes (any device; no staging area)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        shape = f"{self.rows} rows x {self.positions} positions"
        if not self.device.startswith("cuda"):
            return (f"engine memory on {self.device}: not measured (the row pool holds "
                    f"{self.row_pool_mib:.0f} MiB, {shape})")
        return (f"engine memory on {self.device}: weights {self.weights_mib:.0f} MiB, "
                f"rows {self.rows_mib:.0f} MiB ({shape}), graphs {self.graphs_mib:.0f} MiB, "
                f"workspace {self.workspace_mib:.0f} MiB, total reserved {self.reserved_mib:.0f} "
                f"MiB (peak {self.peak_reserved_mib:.0f} MiB); the card has "
                f"{self.device_free_mib:.0f} of {self.device_total_mib:.0f} MiB free")


def account_of(device: str, rows: int, positions: int, row_pool_bytes: int,
               samples: dict[str, MemorySample], peak_reserved: int, device_total: int,
               device_free: int) -> MemoryAccount:
    """The parts from the samples at every point of POINTS (bytes in, MiB out)."""
    missing = [p for p in POINTS if p not in samples]
    if missing:
        raise ValueError(f"memory samples missing at {', '.join(missing)}; "
                         f"needed at {', '.join(POINTS)}")
    s = samples
    weights = s["loaded"].allocated - s["start"].allocated
    row_part = s["rows"].allocated - s["loaded"].allocated
    graphs = s["captured"].reserved - s["before_capture"].reserved
    workspace = max(0, peak_reserved - s["start"].reserved - weights - row_part - graphs)
    return MemoryAccount(
        device=device, rows=rows, positions=positions, weights_mib=weights / MIB,
        rows_mib=row_part / MIB, graphs_mib=graphs / MIB, workspace_mib=workspace / MIB,
        reserved_mib=s["ready"].reserved / MIB, peak_reserved_mib=peak_reserved / MIB,
        device_total_mib=device_total / MIB, device_free_mib=device_free / MIB,
        row_pool_mib=row_pool_bytes / MIB)


class MemoryProbe:
    """Samples of the device's caching allocator at named points of one engine's start-up
    (its peak counted from the probe's creation)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.samples: dict[str, MemorySample] = {}
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.mark("start")

    def mark(self, point: str, settle: bool = False) -> None:
        """Sample now. `settle`: first wait for the device and hand the allocator's unused
        cache back, so that what it still holds is in use (around the graph capture)."""
        if not self.cuda:
            self.samples[point] = MemorySample(0, 0)
            return
        if settle:
            torch.cuda.synchronize(self.device)
            with torch.cuda.device(self.device):
                torch.cuda.empty_cache()
        self.samples[point] = MemorySample(torch.cuda.memory_allocated(self.device),
                                           torch.cuda.memory_reserved(self.device))

    def account(self, rows: int, positions: int, row_pool_bytes: int) -> MemoryAccount:
        peak, total, free = 0, 0, 0
        if self.cuda:
            peak = torch.cuda.max_memory_reserved(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
        return account_of(str(self.device), rows, positions, row_pool_bytes, self.samples, peak,
                          total, free)
