"""Writing a trained model to one self-contained file: ``avdetect export``.

The reader is :func:`avdetect.inference.load_model` / ``load_exported`` (the inference
runtime ``avdetect detect`` uses); this module only writes.

Export file format (``.msgpack``; no pickle anywhere): the container of
:mod:`avdetect.msgpack_file`, one MessagePack map::

    {"header":    JSON text: format name + version (``inference.FORMAT``,
                  ``inference.FORMAT_VERSION``), the config, the threshold record,
                  label vocabularies, preprocessing record, score scale, the source
                  checkpoint (workdir, step),
     "variables": {"params": ..., "batch_stats": ... (any non-parameter collections)},
     "traced_predict": (optional) bytes of ``jax.export``'s serialization of the predict
                  function for any number of windows (symbolic batch), lowered for CPU,
                  CUDA and TPU}

The pre-traced predict function spares each ``avdetect detect`` process the Python
tracing of the network (0.6-1.3 s for the default student on 2 cores); with JAX's
persistent compilation cache warm, a run then only deserializes it and fetches the
compiled program. A file without it (or a JAX that cannot read it) is traced as before.

The file is self-contained: frozen pretrained encoders (CAD's Whisper, face mesh, CLIP)
are part of "variables" like every other weight, and the stored config records their
sizes (``model.<encoder>.arch``, the method's ``export_config``), so loading never reads
the pretrained sources (tests/test_export.py scores a clip with them hidden).

Arrays are stored as raw bytes + dtype + shape (flax's msgpack extension), read back with
``np.frombuffer``; optimizer state, RNG and the input-iterator state are left out, so the
file is about 1/3 of a checkpoint with Adam.
"""

from __future__ import annotations

import json
import logging
import time

import jax
from jax import export as jax_export
import numpy as np

from avdetect import msgpack_file
from avdetect.inference import FORMAT, FORMAT_VERSION, LoadedModel, load_workdir

# Platforms the pre-traced predict function is lowered for (lowering needs no device).
EXPORT_PLATFORMS = ("cpu", "cuda", "tpu")


def trace_predict(model: LoadedModel) -> bytes | None:
    """``jax.export`` serialization of ``model``'s predict function for batches of any
    number of windows of :meth:`LoadedModel.window_signature` (symbolic batch 'b'),
    lowered for :data:`EXPORT_PLATFORMS`; None (with a warning) if the network cannot be
    exported that way - the file then works as before, traced at load."""
    (b,) = jax_export.symbolic_shape("b")
    var_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                            model.variables)
    batch_spec = {k: jax.ShapeDtypeStruct((b, *shape), np.dtype(dt))
                  for k, (shape, dt) in model.window_signature().items()}
    try:
        exported = jax_export.export(model.jitted_predict, platforms=EXPORT_PLATFORMS)(
            var_spec, batch_spec)
        return bytes(exported.serialize())
    except Exception as e:   # shape polymorphism or a platform lowering not supported
        logging.warning("model export: the predict function cannot be pre-traced (%s: %s); "
                        "the file is written without it", type(e).__name__, str(e)[:300])
        return None


def export_model(model_or_path: LoadedModel | str, out_path: str, *, step: int | None = None
                 ) -> str:
    """Writes the params-only file of a workdir's checkpoint (or of a LoadedModel) to
    ``out_path``; returns the path. See the module docstring for the format."""
    model = model_or_path if isinstance(model_or_path, LoadedModel) else load_workdir(model_or_path, step)
    # A method with pretrained encoders records their sizes in the stored config, so the
    # file alone rebuilds it (the weights themselves are in "variables").
    config = getattr(model.method, "export_config", lambda: model.config)()
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "config": json.loads(config.to_json_best_effort()),
        "threshold": {"value": model.threshold, "source": model.threshold_source,
                      "origin": model.threshold_origin},
        "score_scale": model.score_scale,
        "vocabularies": {"category": list(model.category_names),
                         "method": list(model.method_names) if model.method_names is not None else None},
        "preprocess": model.preprocess,
        "source": model.source,
        "notes": model.notes,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    traced = trace_predict(model)
    extra = {"traced_predict": traced} if traced is not None else {}
    return msgpack_file.write(out_path, header, model.variables, **extra)


__all__ = ["export_model", "trace_predict", "EXPORT_PLATFORMS"]
