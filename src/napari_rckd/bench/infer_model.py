"""The model `bench infer` times: a checkpoint, or a random-weight dense CSAT, tiled as
`predict` tiles it or as live view does (shared by the throughput and memory rows)."""

from __future__ import annotations

from pathlib import Path


def model_source(
    args, folder: str, mpp: float, windows: str | None = None, checkpoint: str | None = None
):
    """The benchmarked model: ``checkpoint``, else ``--checkpoint``, else a random-weight dense
    CSAT at ``mpp``, tiled as `predict` tiles it (``whole-slide``) or as live view does
    (``model``)."""
    from napari_rckd.inference.sources import RegionSource

    windows = windows or ("model" if args.windows == "model" else "whole-slide")
    checkpoint = checkpoint or args.checkpoint
    if checkpoint:
        return _tiled(RegionSource(checkpoint, args.device), windows)
    from napari_rckd.models import ModelConfig, create_model, save_checkpoint

    path = Path(folder) / f"random-{mpp:g}.safetensors"
    if not path.exists():
        config = ModelConfig(task="dense", num_outputs=2, input_mpp=mpp, tile_size=256)
        save_checkpoint(path, create_model(config), {"note": "random weights for benchmarking"})
    return _tiled(RegionSource(path, args.device), windows)


def model_label(checkpoint: str | None) -> str:
    """A checkpoint by its folder and name (runs keep best.safetensors in their own folders)."""
    if not checkpoint:
        return "random rckd_csat"
    return f"{Path(checkpoint).parent.name}/{Path(checkpoint).name}"


def _tiled(source, windows: str):
    return source.for_whole_slide() if windows == "whole-slide" else source
