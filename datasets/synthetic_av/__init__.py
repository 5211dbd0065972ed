"""The synthetic audio-visual deepfake benchmark: generator (``generate.py``) and its parts.

``datasets.synthetic_av.generate.generate(out_dir, num_clips=..., seed=...)`` writes real
H.264 + AAC mp4 clips of synthetic speakers (real face stills animated from espeak-ng
speech with exact phone timing) in a FakeAVCeleb-like tree with ``meta_data.csv`` and
per-frame ground truth. Modules: ``tts`` (speech + phone timing), ``text`` (sentences),
``visemes`` (tracks and coarticulation), ``faces`` (stills from realtalk train-split
identities, identities), ``still_frames`` (which frame of a clip is a still), ``render``
(mouth, jaw, blinks, head motion), ``audio_fx`` (noise floor, voice conversion),
``methods`` (what each manipulation changes), ``plan`` (identities, splits, clip specs),
``manipulations`` (rendering one clip), ``generate`` (files and CLI), ``bench`` (clips
per second). Importing the package itself loads nothing heavy.
"""
