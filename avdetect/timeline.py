"""The timeline picture of one scored video (``<name>.timeline.png`` of ``avdetect detect``).

Three panels over time (seconds), sharing the x axis:

* score: the per-frame score (thin line), each window's score (thick segment, red at or
  above the threshold, green below), the threshold (dashed) and the video score (dotted);
* face: green where the face detector/tracker found the face, red where it did not;
* audio: green where there is audio, grey where it is digital silence, red over the
  whole strip when the file has no audio track.

Matplotlib's object API with the Agg renderer (no pyplot, no global state), so it is
safe in batch jobs and notebooks alike.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from avdetect import contract
from avdetect.result import DetectResult, frame_ranges

COLORS = {"present": "#2ca02c", "missing": "#d62728", "silent": "#9e9e9e",
          "fake": "#d62728", "real": "#2ca02c", "frame": "#4c72b0", "threshold": "#333333"}
SIZE_IN, DPI = (10.0, 4.2), 100


def _strip(ax, mask: np.ndarray, on_color: str, off_color: str, label: str) -> None:
    """Colour a [T] bool mask as horizontal bars (frame t covers [t, t+1) / fps)."""
    fps = contract.VIDEO_FPS
    for value, color in ((True, on_color), (False, off_color)):
        runs = frame_ranges(mask if value else ~mask)
        if runs:
            ax.broken_barh([(a / fps, (b - a) / fps) for a, b in runs], (0, 1),
                           facecolors=color, edgecolors="none")
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center")


def timeline_figure(result: DetectResult) -> Figure:
    """The timeline Figure of ``result``; ``fig.axes`` = [score, face, audio]."""
    fps = contract.VIDEO_FPS
    fig = Figure(figsize=SIZE_IN, dpi=DPI)
    grid = fig.add_gridspec(3, 1, height_ratios=(6, 0.7, 0.7), hspace=0.08,
                            left=0.09, right=0.98, top=0.88, bottom=0.12)
    ax = fig.add_subplot(grid[0])
    ax_face = fig.add_subplot(grid[1], sharex=ax)
    ax_audio = fig.add_subplot(grid[2], sharex=ax)
    duration = max(result.num_frames / fps, 1.0 / fps)

    # --- scores ---
    t = (np.arange(result.num_frames) + 0.5) / fps
    ax.plot(t, result.frame_scores, color=COLORS["frame"], lw=0.9, alpha=0.7, label="frame score")
    for w in result.windows:
        color = COLORS["fake"] if w.score >= result.threshold else COLORS["real"]
        ax.hlines(w.score, w.start / fps, (w.start + w.num_frames) / fps, colors=color, lw=3.0)
    ax.axhline(result.threshold, color=COLORS["threshold"], ls="--", lw=1.0,
               label=f"threshold {result.threshold:.3g}")
    ax.axhline(result.score, color=COLORS[result.verdict], ls=":", lw=1.5,
               label=f"video score {result.score:.3g}")
    values = np.r_[result.frame_scores, [w.score for w in result.windows],
                   result.threshold, result.score]
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.1 * (hi - lo) if hi > lo else 0.5
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(0, duration)
    ax.set_ylabel("score")
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)

    # --- strips ---
    _strip(ax_face, result.face_found, COLORS["present"], COLORS["missing"], "face")
    ax_face.tick_params(labelbottom=False)
    if result.has_audio:
        _strip(ax_audio, result.audio_present, COLORS["present"], COLORS["silent"], "audio")
    else:
        _strip(ax_audio, np.zeros(result.num_frames, bool), COLORS["present"], COLORS["missing"],
               "audio")
        ax_audio.text(duration / 2, 0.5, "no audio track", ha="center", va="center",
                      fontsize=8, color="white")
    ax_audio.set_xlabel("time (s)")

    thr_note = {"report": "threshold from validation report", "override": "threshold given",
                "default": "DEFAULT threshold (no validation report)"}[result.threshold_origin]
    fig.suptitle(f"{os.path.basename(result.path)}: {result.verdict.upper()}  "
                 f"(score {result.score:.3g} {'>=' if result.verdict == 'fake' else '<'} "
                 f"{result.threshold:.3g}; {thr_note})", fontsize=10)
    flags = result.warnings
    if flags:
        fig.text(0.09, 0.905, "; ".join(flags)[:160], fontsize=7, color="#7a4f00")
    return fig


def save_timeline(result: DetectResult, path: str | os.PathLike) -> str:
    """Writes the timeline PNG of ``result`` to ``path``; returns the path."""
    path = os.fspath(path)
    timeline_figure(result).savefig(path, dpi=DPI, format="png")
    return path
