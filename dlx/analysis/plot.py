"""Small plots drawn with PIL (no matplotlib dependency): lines, scatters, bands, bars, histograms.

A `Figure` collects artists in data coordinates, then `render()` picks the limits (or takes the given
ones), draws axes with "nice" ticks (powers of ten on a log axis), a title, axis labels and a legend.
Enough for the curves and scatter plots of the analysis commands, readable at a glance:

    fig = Figure("reliability", xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    fig.bars(left, right, acc, label="accuracy")
    fig.line([0, 1], [0, 1], label="perfect calibration", color="gray")
    fig.save(path)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# matplotlib's tab10: distinguishable, colour-blind friendlier than pure RGB.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MAX_TICK = 28  # characters of a custom tick label
NAMED = {"gray": "#7f7f7f", "black": "#000000", "red": "#d62728", "blue": "#1f77b4", "green": "#2ca02c",
         "orange": "#ff7f0e"}


def font(size: int = 13) -> ImageFont.ImageFont:
    """PIL's bundled font at `size` (a bitmap fallback where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def rgb(color: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """'#rrggbb', a name of NAMED, or an RGB tuple -> RGB tuple."""
    if isinstance(color, tuple):
        return color
    color = NAMED.get(color, color)
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def tick_label(v: float, log: bool = False) -> str:
    if log:
        return f"1e{round(v)}" if abs(v) >= 3 else f"{10 ** v:g}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.0e}"
    return f"{v:.4g}"


@dataclass
class Artist:
    kind: str  # line | scatter | band | bars
    x: np.ndarray
    y: np.ndarray
    y2: np.ndarray | None = None  # band: upper edge; bars: right edges (x = left edges, y = heights)
    label: str | None = None
    color: tuple[int, int, int] = (0, 0, 0)
    width: float = 2.0  # line width, or scatter dot radius
    alpha: float = 1.0
    colors: list[tuple[int, int, int]] | None = None  # scatter: one colour per point
    base: np.ndarray | None = None  # bars: bottom of each bar (None = the axis floor)


@dataclass
class Figure:
    """A single axes plot. Sizes in pixels; `logy` draws y on a log10 scale (non-positive values dropped)."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    size: tuple[int, int] = (720, 480)
    logy: bool = False
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    xticks: list[tuple[float, str]] | None = None  # custom (position, label) ticks, e.g. layer names
    legend: str = "upper right"  # upper right | upper left | lower right | lower left | none
    artists: list[Artist] = field(default_factory=list)

    # ---- artists ------------------------------------------------------------------------------
    def _color(self, color: str | None) -> tuple[int, int, int]:
        return rgb(color) if color is not None else rgb(PALETTE[len(self.artists) % len(PALETTE)])

    def line(self, x: Sequence[float], y: Sequence[float], label: str | None = None, color: str | None = None,
             width: float = 2.0) -> "Figure":
        self.artists.append(Artist("line", _arr(x), _arr(y), label=label, color=self._color(color), width=width))
        return self

    def scatter(self, x: Sequence[float], y: Sequence[float], label: str | None = None, color: str | None = None,
                radius: float = 2.0, colors: Sequence[str] | None = None, alpha: float = 1.0) -> "Figure":
        """Dots; `colors` gives each point its own colour (then `label` names nothing in the legend)."""
        self.artists.append(Artist("scatter", _arr(x), _arr(y), label=label, color=self._color(color), width=radius,
                                   colors=[rgb(c) for c in colors] if colors is not None else None, alpha=alpha))
        return self

    def band(self, x: Sequence[float], lo: Sequence[float], hi: Sequence[float], label: str | None = None,
             color: str | None = None, alpha: float = 0.25) -> "Figure":
        """The region between two curves over the same x (e.g. mean +- 2 sigma)."""
        self.artists.append(Artist("band", _arr(x), _arr(lo), _arr(hi), label=label, color=self._color(color),
                                   alpha=alpha))
        return self

    def bars(self, left: Sequence[float], right: Sequence[float], height: Sequence[float], label: str | None = None,
             color: str | None = None, alpha: float = 0.8, bottom: Sequence[float] | None = None) -> "Figure":
        """Bars over [left, right] from `bottom` (default 0, or the floor of a log axis) to `height`."""
        self.artists.append(Artist("bars", _arr(left), _arr(height), _arr(right), label=label,
                                   color=self._color(color), alpha=alpha,
                                   base=_arr(bottom) if bottom is not None else None))
        return self

    def hist(self, values: Sequence[float], bins: int = 30, range: tuple[float, float] | None = None,  # noqa: A002
             label: str | None = None, color: str | None = None, density: bool = True, alpha: float = 0.5) -> "Figure":
        """Histogram of `values` (a density by default, so groups of different sizes compare)."""
        values = _arr(values)
        counts, edges = np.histogram(values, bins=bins, range=range, density=density and len(values) > 0)
        return self.bars(edges[:-1], edges[1:], counts, label=label, color=color, alpha=alpha)

    # ---- rendering ----------------------------------------------------------------------------
    def _ty(self, y: np.ndarray) -> np.ndarray:
        if not self.logy:
            return y
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y > 0, np.log10(np.where(y > 0, y, 1)), np.nan)

    def _limits(self) -> tuple[float, float, float, float]:
        xs, ys = [], []
        for a in self.artists:
            xs.append(a.x)
            ys.append(self._ty(a.y))
            if a.kind == "band":
                ys.append(self._ty(a.y2))
            if a.kind == "bars":
                xs.append(a.y2)
                if not self.logy:
                    ys.append(np.zeros(1))
        x = np.concatenate(xs) if xs else np.zeros(1)
        y = np.concatenate(ys) if ys else np.zeros(1)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        x0, x1 = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        y0, y1 = (float(y.min()), float(y.max())) if y.size else (0.0, 1.0)
        if self.xlim:
            x0, x1 = self.xlim
        elif x1 - x0 < 1e-12:
            x0, x1 = x0 - 0.5, x1 + 0.5
        else:
            pad = 0.03 * (x1 - x0)
            x0, x1 = x0 - pad, x1 + pad
        if self.ylim:
            y0, y1 = (math.log10(v) for v in self.ylim) if self.logy else self.ylim
        elif y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        else:
            pad = 0.05 * (y1 - y0)
            y0, y1 = y0 - (pad if y0 != 0 or self.logy else 0), y1 + pad
        return x0, x1, y0, y1

    def render(self) -> Image.Image:
        """Draw the figure into an RGB image."""
        W, H = self.size
        img = Image.new("RGB", (W, H), "white")
        f, small = font(13), font(11)
        left, top, pw, ph, (x0, x1, y0, y1) = self._frame()

        def px(x: np.ndarray) -> np.ndarray:
            return left + (np.asarray(x, dtype=float) - x0) / (x1 - x0) * pw

        def py(y: np.ndarray) -> np.ndarray:
            return top + ph - (np.asarray(y, dtype=float) - y0) / (y1 - y0) * ph

        d = ImageDraw.Draw(img)
        # grid and ticks
        for t, label in self._yticks(y0, y1):
            yy = float(py(t))
            d.line([(left, yy), (left + pw, yy)], fill=(230, 230, 230))
            tw = d.textlength(label, font=small)
            d.text((left - 6 - tw, yy - 7), label, fill="black", font=small)
        if self.xticks is None:
            for t in nice_ticks(x0, x1):
                xx = float(px(t))
                d.line([(xx, top), (xx, top + ph)], fill=(230, 230, 230))
                label = tick_label(t)
                d.text((xx - d.textlength(label, font=small) / 2, top + ph + 5), label, fill="black", font=small)
        else:
            for t, label in self.xticks:
                xx = float(px(t))
                d.line([(xx, top + ph), (xx, top + ph + 4)], fill="black")
                _vertical_text(img, label[:MAX_TICK], (int(xx) - 6, top + ph + 6), small)
        self._draw_artists(img, px, py, (left, top, left + pw, top + ph))
        d = ImageDraw.Draw(img)
        d.rectangle([left, top, left + pw, top + ph], outline="black")
        if self.title:
            d.text(((W - d.textlength(self.title, font=f)) / 2, 10), self.title, fill="black", font=f)
        if self.xlabel:
            d.text((left + (pw - d.textlength(self.xlabel, font=f)) / 2, H - 22), self.xlabel, fill="black", font=f)
        if self.ylabel:
            _vertical_text(img, self.ylabel + (" (log)" if self.logy else ""), (6, top + ph // 2), f, centre=True)
        self._draw_legend(img, (left, top, left + pw, top + ph), small)
        return img

    def _yticks(self, y0: float, y1: float) -> list[tuple[float, str]]:
        """(position on the axis, label) of the y ticks. A log axis spanning two powers of ten or more is ticked
        at the powers; a narrower one at round values of the data itself (0.2, 0.3, 0.5), never at the
        exponents (a loss axis labelled "-0.2, -0.4" reads as negative losses)."""
        if not self.logy:
            return [(t, tick_label(t)) for t in nice_ticks(y0, y1)]
        powers = [float(t) for t in range(math.ceil(y0), math.floor(y1) + 1)]
        if len(powers) >= 2:
            return [(t, tick_label(t, log=True)) for t in powers]
        values = [v for v in nice_ticks(10 ** y0, 10 ** y1, n=5) if v > 0]
        return [(math.log10(v), f"{v:.3g}") for v in values]

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        """Where the data point (x, y) lands in the rendered image (for tests that read a plot back)."""
        left, top, pw, ph, (x0, x1, y0, y1) = self._frame()
        ty = float(self._ty(np.array([y]))[0])
        return left + (x - x0) / (x1 - x0) * pw, top + ph - (ty - y0) / (y1 - y0) * ph

    def _frame(self) -> tuple[int, int, int, int, tuple[float, float, float, float]]:
        """Left and top margin, plot width and height in pixels, and the data limits."""
        W, H = self.size
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        small = font(11)
        tick_room = max((probe.textlength(label[:MAX_TICK], font=small) for _, label in self.xticks or []), default=0)
        left, right, top = 78, 20, 36 if self.title else 16
        bottom = 58 if self.xticks is None else int(tick_room) + 40
        return left, top, W - left - right, H - top - bottom, self._limits()

    def _draw_artists(self, img: Image.Image, px, py, box: tuple[int, int, int, int]) -> None:  # noqa: ANN001
        """Each artist on a layer of its own, composited in turn: ImageDraw on one RGBA layer would replace pixels,
        not blend them, so a later band would wipe out the lines under it. Areas (bands, bars) go first, under every
        line and scatter, as in matplotlib; within each kind the order of the calls is kept."""
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).rectangle(box, fill=255)  # clip to the plot area: never over the tick labels
        out = img.convert("RGBA")
        for a in sorted(self.artists, key=lambda a: a.kind not in ("band", "bars")):
            layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
            self._draw_one(ImageDraw.Draw(layer), a, px, py)
            clipped = Image.new("RGBA", img.size, (0, 0, 0, 0))
            clipped.paste(layer, (0, 0), mask)
            out = Image.alpha_composite(out, clipped)
        img.paste(out.convert("RGB"))

    def _draw_one(self, d: ImageDraw.ImageDraw, a: "Artist", px, py) -> None:  # noqa: ANN001
        alpha = int(255 * a.alpha)
        if a.kind == "line":
            ok = np.isfinite(self._ty(a.y)) & np.isfinite(a.x)
            for seg in _runs(ok):  # gaps where values are missing (or <= 0 on a log axis)
                pts = list(zip(px(a.x[seg]), py(self._ty(a.y[seg])), strict=True))
                if len(pts) > 1:
                    d.line(pts, fill=(*a.color, alpha), width=int(a.width), joint="curve")
                elif pts:
                    x, y = pts[0]
                    d.ellipse([x - a.width, y - a.width, x + a.width, y + a.width], fill=(*a.color, alpha))
        elif a.kind == "scatter":
            xs, ys = px(a.x), py(self._ty(a.y))
            r = a.width
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                if np.isfinite(x) and np.isfinite(y):
                    c = a.colors[i] if a.colors is not None else a.color
                    d.ellipse([x - r, y - r, x + r, y + r], fill=(*c, alpha))
        elif a.kind == "band":
            lo, hi = self._ty(a.y), self._ty(a.y2)
            pts = list(zip(px(a.x), py(hi), strict=True)) + list(zip(px(a.x[::-1]), py(lo[::-1]), strict=True))
            d.polygon(pts, fill=(*a.color, alpha))
        elif a.kind == "bars":
            floor = self._limits()[2]
            floor = float(py(max(floor, 0.0) if not self.logy else floor))
            bases = py(self._ty(a.base)) if a.base is not None else np.full(len(a.x), floor)
            for l, r, h, base in zip(px(a.x), px(a.y2), py(self._ty(a.y)), bases, strict=True):
                if np.isfinite(h) and np.isfinite(base):
                    d.rectangle([l, min(h, base), max(r - 1, l), max(h, base)], fill=(*a.color, alpha),
                                outline=(*a.color, 255))

    def _draw_legend(self, img: Image.Image, box: tuple[int, int, int, int], f: ImageFont.ImageFont) -> None:
        entries = [(a.label, a.color, a.kind) for a in self.artists if a.label]
        if not entries or self.legend == "none":
            return
        d = ImageDraw.Draw(img)
        width = max(d.textlength(text, font=f) for text, _, _ in entries) + 34
        height = 16 * len(entries) + 8
        x = box[2] - width - 8 if "right" in self.legend else box[0] + 8
        y = box[1] + 8 if "upper" in self.legend else box[3] - height - 8
        d.rectangle([x, y, x + width, y + height], fill="white", outline=(160, 160, 160))
        for i, (text, color, kind) in enumerate(entries):
            yy = y + 6 + 16 * i
            if kind == "line":
                d.line([(x + 6, yy + 7), (x + 24, yy + 7)], fill=color, width=3)
            else:
                d.rectangle([x + 8, yy + 2, x + 20, yy + 12], fill=color)
            d.text((x + 28, yy), text, fill="black", font=f)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.render().save(path)
        return path


def _arr(x: Sequence[float]) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1)


def _runs(ok: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the maximal runs of True in `ok`."""
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    return np.split(idx, breaks)


def _vertical_text(img: Image.Image, text: str, at: tuple[int, int], f: ImageFont.ImageFont,
                   centre: bool = False) -> None:
    """Paste `text` rotated by 90 degrees (reading bottom to top) with its top-left corner at `at`."""
    probe = ImageDraw.Draw(img)
    w = int(probe.textlength(text, font=f)) + 4
    tile = Image.new("L", (w, 18), 0)
    ImageDraw.Draw(tile).text((2, 1), text, fill=255, font=f)
    tile = tile.rotate(90, expand=True)
    x, y = at
    if centre:
        y -= tile.height // 2
    img.paste(Image.new("RGB", tile.size, "black"), (x, y), tile)
