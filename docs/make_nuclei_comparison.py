"""Make docs/images/nuclei-comparison.png: live nuclei on the same CMU-1 view from the
classical detector, the learned teacher, the built-in teacher (the two averaged) and the
RCKD-CSAT student, 2 × 2, each a real napari screenshot by make_analyze_screenshot.py. Run under a display, e.g.
``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_nuclei_comparison.py SLIDE``."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path("docs/images/nuclei-comparison.png")
SHOTS = (
    ("classical", "classical detector"),
    ("learned", "learned teacher"),
    ("builtin", "builtin: learned + classical"),
    ("csat", "RCKD-CSAT student"),
)
COLUMNS = 2


def main(slide: str) -> None:
    from PIL import Image, ImageDraw

    with tempfile.TemporaryDirectory() as tmp:
        panels = []
        for spec, title in SHOTS:
            shot = Path(tmp) / f"{spec}.png"
            script = Path(__file__).with_name("make_analyze_screenshot.py")
            subprocess.run(
                [sys.executable, str(script), slide, str(shot), spec, "canvas"], check=True
            )
            with Image.open(shot) as image:
                canvas = image.convert("RGB")
            ImageDraw.Draw(canvas).text((12, 12), title, fill=(255, 255, 0))
            panels.append(canvas)
    width, height = max(p.width for p in panels), max(p.height for p in panels)
    rows = -(-len(panels) // COLUMNS)
    sheet = Image.new("RGB", (width * COLUMNS, height * rows))
    for index, panel in enumerate(panels):
        sheet.paste(panel, (index % COLUMNS * width, index // COLUMNS * height))
    sheet.quantize(colors=128).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(*sys.argv[1:])
