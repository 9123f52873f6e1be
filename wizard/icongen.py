"""Draw the application icon with Pillow: ``python -m wizard.icongen`` rewrites ``assets/``.

The generated PNG and ICO files are committed, so neither the wizard nor the build needs Pillow
for this. Colours come from the theme palette.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .assets import ICON_ICO, ICON_PNG_SIZES, assets_dir, icon_png_name
from .theme import PALETTE

MASTER = 256


def draw(size: int = MASTER) -> Any:
    """The icon at ``size`` pixels: two stacked "films" and an arrow into a green box."""
    from PIL import Image, ImageDraw  # only needed by whoever regenerates the icon

    scale = size / MASTER
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple:
        return tuple(int(round(v * scale)) for v in (x0, y0, x1, y1))

    d.rounded_rectangle(box(8, 8, 248, 248), radius=int(44 * scale), fill=PALETTE["base"],
                        outline=PALETTE["lavender"], width=max(1, int(8 * scale)))
    d.rounded_rectangle(box(60, 40, 136, 146), radius=int(10 * scale), fill=PALETTE["surface2"])
    d.rounded_rectangle(box(36, 62, 112, 168), radius=int(10 * scale), fill=PALETTE["blue"])
    d.rounded_rectangle(box(150, 110, 224, 208), radius=int(12 * scale), fill=PALETTE["green"])
    arrow = [(96, 150), (118, 150), (118, 128), (146, 160), (118, 192), (118, 170), (96, 170)]
    d.polygon([(int(x * scale), int(y * scale)) for x, y in arrow], fill=PALETTE["peach"],
              outline=PALETTE["base"])
    return img


def main() -> int:
    out = assets_dir()
    out.mkdir(parents=True, exist_ok=True)
    master = draw(MASTER)
    for size in ICON_PNG_SIZES:
        # Small sizes are drawn directly: downscaling the big one blurs the shapes.
        img = master if size == MASTER else draw(size * 4).resize((size, size), 1)
        img.save(str(out / icon_png_name(size)))
    master.save(str(out / ICON_ICO), sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    print("Wrote icons to %s" % Path(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
