"""Print a slide's pyramid (levels, shapes, tiles), mpp, magnification, vendor and associated images."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", help="slide file (SVS, OME-TIFF, NDPI, DICOM folder, ...)")
    parser.add_argument("--mpp", type=float, help="override the µm per pixel the file records")


def run(args: argparse.Namespace) -> int:
    from napari_rckd.io import open_slide

    with open_slide(args.slide, mpp=args.mpp) as slide:
        mpp = (
            "unknown (not recorded in the file)" if slide.mpp is None else f"{slide.mpp:.4g} µm/px"
        )
        lines = [
            f"file:          {slide.path}",
            f"vendor:        {slide.vendor}",
            f"compression:   {slide.compression}",
            f"mpp:           {mpp}",
            f"magnification: {slide.magnification or 'unknown'}",
            f"tile:          {slide.tile_shape[0]} x {slide.tile_shape[1]} px (height x width)",
            "levels:        height x width px, downsample, µm/px",
        ]
        for index, (level, downsample) in enumerate(
            zip(slide.levels, slide.downsamples, strict=True)
        ):
            height, width = level.shape[:2]
            level_mpp = slide.level_mpp(index)
            at = f"  {level_mpp:.4g} µm/px" if level_mpp else ""
            lines.append(f"  {index}: {height} x {width}  downsample {downsample:.4g}{at}")
        names = ", ".join(_associated(slide, name) for name in slide.associated)
        lines.append(f"associated:    {names or 'none'}" + (" (height x width)" if names else ""))
    print("\n".join(lines))
    return 0


def _associated(slide, name: str) -> str:
    """``label 387 x 463`` (height x width), or ``label (damaged)``: one bad image does not hide
    the pyramid."""
    from napari_rckd.io.slide import DamagedSlideError

    try:
        return f"{name} {' x '.join(map(str, slide.associated[name].shape[:2]))}"
    except DamagedSlideError:
        return f"{name} (damaged)"
