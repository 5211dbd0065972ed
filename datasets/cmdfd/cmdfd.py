"""TFDS builder `cmdfd`: the Cross-Modal Deepfake Detection test set of Yu et al. (ICME 2024,
"Explicit Correlation Learning for Generalizable Cross-Modal Deepfake Detection") from a
manually downloaded copy.

Four generation methods, each in two variants: cross-identity (``<idA>-<idB>``: the face of
idA driven by the speech of idB) and ``_Self`` (driven by idA's own speech). Eight test
splits, each = the shared real ``origin`` clips + the fakes of one subset:

    w2l, w2l_self           Wav2Lip (lip-sync)
    vrt, vrt_self           VideoReTalking (lip-sync)
    mit, mit_self           MakeItTalk (audio-driven talking head)
    a2h, a2h_self           Audio2Head (audio-driven talking head)

(the reference code's ``--testData`` names, lower-cased). Real clips: RVRA, method 'real';
fakes: FVRA (fake video, real speech), method 'wav2lip' / 'videoretalking' / 'makeittalk'
/ 'audio2head', with ``attributes`` holding the subset, whether it is a _Self clip, the face
id and the audio id. A real clip is preprocessed once and written into every split.

Missing audio: the W2L and W2L_Self videos were released without an audio track. As the
dataset's maintainers advise (CMDFD issue #3: "the audio is the same for the same ID pairs
across different forgery types ... or you can use the original audio; the ID after the
separator is the audio ID"), a clip without audio takes the audio of the original clip of
its audio id (``origin/<idB>_*.mp4``, what the reference code's CSVs point to for every
fake), or else of the clip of the same name in another subset; ``audio_source`` records
which. This applies to every fake that has no audio track, not only W2L; a clip with no
source at all keeps ``has_audio=False`` and is listed in the build report.
"""

from __future__ import annotations

import pathlib
import re

import tensorflow_datasets as tfds

from avdetect.data.builder import AVClipBuilder, face_size_configs, required_manual_dir
from avdetect.data.clips import ClipTask, Listing, Problem
from avdetect.errors import ConfigError

# split name -> (method, self-driven, accepted folder names, lower-case)
SUBSETS = {
    "w2l": ("wav2lip", False, ("wav2lip", "w2l")),
    "w2l_self": ("wav2lip", True, ("wav2lip_self", "w2l_self")),
    "vrt": ("videoretalking", False, ("videoretalk", "videoretalking", "vrt")),
    "vrt_self": ("videoretalking", True, ("videoretalk_self", "videoretalking_self",
                                          "vrt_self")),
    "mit": ("makeittalk", False, ("makeittalk", "mit")),
    "mit_self": ("makeittalk", True, ("makeittalk_self", "mit_self")),
    "a2h": ("audio2head", False, ("audio2head", "a2h")),
    "a2h_self": ("audio2head", True, ("audio2head_self", "a2h_self")),
}
REAL_FOLDERS = ("origin", "real")
FAKE_NAME = re.compile(r"^(id\d+)[-_](id\d+)$")          # <face id>-<audio id>
REAL_NAME = re.compile(r"^(id\d+)_(.+)$")               # <id>_<YouTube id>

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the CMDFD test set from the link in
https://github.com/ljj898/CMDFD-Dataset-and-Deepfake-Detection (academic use), unpack it
and pass the folder as --manual_dir (a folder holding a single CMDFD/ or My_Test/
subfolder also works). Expected layout (folder names are matched case-insensitively):

  <manual_dir>/
    origin/<id>_<YouTube id>.mp4          the 1000 real clips, e.g. id07297_VN9-PFCJMQQ.mp4
    wav2lip/<idA>-<idB>.mp4               face of idA driven by the speech of idB
    wav2lip_Self/<idA>-<idA>.mp4
    VideoReTalk/  VideoReTalk_Self/       (or VideoReTalking..., VRT...)
    MakeItTalk/   MakeItTalk_Self/        (or MIT...)
    Audio2Head/   Audio2Head_Self/        (or A2H...)

`W2L`/`W2L_Self` are accepted for the wav2lip folders; `_` instead of `-` between the two
ids is accepted. .wav files beside the videos are ignored. A subset folder that is absent
gives no split (reported).
"""


def find_root(manual: pathlib.Path) -> pathlib.Path:
    """The folder holding ``origin/``: ``manual`` or its single dataset subfolder."""
    for cand in (manual, manual / "CMDFD", manual / "My_Test"):
        if _child(cand, REAL_FOLDERS) is not None:
            return cand
    raise ConfigError(f"cmdfd: no origin/ folder of real clips in {manual}.\n"
                      f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _child(root: pathlib.Path, names: tuple[str, ...]) -> pathlib.Path | None:
    if not root.is_dir():
        return None
    by_lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for n in names:
        if n in by_lower:
            return by_lower[n]
    return None


class Cmdfd(AVClipBuilder):
    """CMDFD test subsets (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = face_size_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DESCRIPTION = __doc__
    HOMEPAGE = "https://github.com/ljj898/CMDFD-Dataset-and-Deepfake-Detection"
    CITATION = """@inproceedings{yu2024explicit,
  title={Explicit Correlation Learning for Generalizable Cross-Modal Deepfake Detection},
  author={Yu, Cai and Jia, Shan and Fu, Xiaomeng and Liu, Jin and Tian, Jiahe and Dai, Jiao
          and Wang, Xi and Lyu, Siwei and Han, Jizhong},
  booktitle={IEEE International Conference on Multimedia and Expo (ICME)},
  year={2024}}"""

    def _list_clips(self, dl_manager) -> Listing:
        manual = required_manual_dir(dl_manager, "cmdfd", "the unpacked test set",
                                     MANUAL_DOWNLOAD_INSTRUCTIONS)
        return list_cmdfd(find_root(manual))


def list_cmdfd(root: pathlib.Path) -> Listing:
    """List the real clips and every subset's fakes; attach borrowed audio sources."""
    listing = Listing(source_info={"root": str(root)})
    origin = _child(root, REAL_FOLDERS)
    reals, origin_of = [], {}               # origin_of: id -> its first real clip
    for p in sorted(origin.glob("*.mp4")):
        m = REAL_NAME.match(p.stem)
        if not m:
            listing.problems.append(Problem(str(p), "bad_name",
                                            "real clip name is not <id>_<YouTube id>.mp4"))
            continue
        origin_of.setdefault(m.group(1), p)
        reals.append(ClipTask(key=f"{origin.name}/{p.stem}", path=str(p),
                              rel_path=str(p.relative_to(root)), label=0, video_fake=False,
                              audio_fake=False, method="real", identity=m.group(1),
                              attributes={"subset": "origin", "youtube_id": m.group(2)}))

    folders = {s: _child(root, spec[2]) for s, spec in SUBSETS.items()}
    for s, folder in folders.items():
        if folder is None:
            listing.problems.append(Problem(str(root / SUBSETS[s][2][0]), "missing_subset",
                                            f"no folder for subset {s}: split not built"))
    # file name -> paths of that clip in every subset (the same id pair shares its audio)
    by_name: dict[str, list[pathlib.Path]] = {}
    for folder in folders.values():
        if folder is not None:
            for p in sorted(folder.glob("*.mp4")):
                by_name.setdefault(p.stem.replace("_", "-"), []).append(p)

    for split, (method, is_self, _) in SUBSETS.items():
        folder = folders[split]
        if folder is None:
            continue
        for t in reals:
            listing.add(t, split)
        for p in sorted(folder.glob("*.mp4")):
            m = FAKE_NAME.match(p.stem)
            if not m:
                listing.problems.append(Problem(str(p), "bad_name",
                                                "fake clip name is not <idA>-<idB>.mp4"))
                continue
            face_id, audio_id = m.groups()
            # Fallback audio (used only when the clip has no audio track of its own).
            fallback, source = None, ""
            if audio_id in origin_of:
                fallback = origin_of[audio_id]
                source = str(fallback.relative_to(root))
            else:
                others = [q for q in by_name.get(p.stem.replace("_", "-"), []) if q != p]
                if others:
                    fallback = others[0]
                    source = str(fallback.relative_to(root))
            listing.add(ClipTask(
                key=f"{folder.name}/{p.stem}", path=str(p), rel_path=str(p.relative_to(root)),
                label=1, video_fake=True, audio_fake=False, method=method, identity=face_id,
                audio_path=str(fallback) if fallback else None, audio_source=source,
                audio_if_missing=True,
                attributes={"subset": split, "self": is_self, "face_id": face_id,
                            "audio_id": audio_id}), split)
    return listing
