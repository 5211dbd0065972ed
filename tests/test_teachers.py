"""Teachers: shared alphabets, soft posteriors, the oracle on generator ground truth, the
forced-alignment teacher on espeak-ng speech, and the deep_avsr Flax port against a
torch.nn reference built here from the architecture (independent of the port)."""

from __future__ import annotations

import math
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from avdetect.teachers import alphabet, posteriors

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")


# --------------------------------------------------------------------------- alphabets

# deep_avsr's CHAR_TO_INDEX (its config.py), the row order of the teachers' outputConv.
DEEP_AVSR_CHAR_TO_INDEX = {
    " ": 1, "'": 22, "1": 30, "0": 29, "3": 37, "2": 32, "5": 34, "4": 38, "7": 36, "6": 35,
    "9": 31, "8": 33, "A": 5, "C": 17, "B": 20, "E": 2, "D": 12, "G": 16, "F": 19, "I": 6,
    "H": 9, "K": 24, "J": 25, "M": 18, "L": 11, "O": 4, "N": 7, "Q": 27, "P": 21, "S": 8,
    "R": 10, "U": 13, "T": 3, "W": 15, "V": 23, "Y": 14, "X": 26, "Z": 28, "<EOS>": 39}


def test_char_alphabet_matches_deep_avsr_order():
    assert len(alphabet.CHARS) == 40 == alphabet.NUM_CHARS
    assert alphabet.CHARS[0] == alphabet.BLANK
    for ch, idx in DEEP_AVSR_CHAR_TO_INDEX.items():
        assert alphabet.CHARS[idx] == ch
    np.testing.assert_array_equal(alphabet.text_to_chars("It's 4 U!"),
                                  [6, 3, 22, 8, 1, 38, 1, 13])


def _cmudict_phones() -> set[str]:
    from pocketsphinx import get_model_path
    path = pathlib.Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    phones = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            phones.update(line.split()[1:])
    return phones


def test_every_cmudict_phone_has_a_viseme_and_bilabials_share_one():
    phones = _cmudict_phones()
    assert len(phones) == 39                     # ARPAbet without stress marks
    classes = {p: alphabet.phone_to_viseme(p, "arpabet") for p in phones}
    assert classes["P"] == classes["B"] == classes["M"] == "PBM"
    assert classes["F"] == classes["V"] != classes["P"]
    assert alphabet.phone_to_viseme("AA1") == classes["AA"]      # stress digits ignored
    assert alphabet.phone_to_viseme("SIL") == alphabet.SILENCE
    assert set(classes.values()) == set(alphabet.VISEMES) - {alphabet.SILENCE}


def test_scheme_resolves_colliding_names():
    # "T" is /t/ in ARPAbet but /θ/ in espeak's mnemonics; "V" is /v/ vs /ʌ/.
    assert alphabet.phone_to_viseme("T", "arpabet") == "TDNL"
    assert alphabet.phone_to_viseme("T", "espeak") == "TH"
    assert alphabet.phone_to_viseme("V", "espeak") == alphabet.phone_to_viseme("AH")
    assert alphabet.guess_phone_scheme(["SIL", "T", "AH0", "V"]) == "arpabet"
    assert alphabet.guess_phone_scheme(["_", "T", "@", "aI"]) == "espeak"
    assert alphabet.guess_phone_scheme(["θ", "ə"]) == "ipa"
    with pytest.raises(KeyError, match="qq"):
        alphabet.phone_to_viseme("qq", "espeak")


@needs_espeak
def test_espeak_mnemonics_and_ipa_map_to_the_same_visemes():
    text = ("the quick brown fox jumps over the lazy dog; she measured her thick vision, "
            "going to church with joy. How about our air, ear, poor oil, a thousand yards. "
            "Nurses fear wars; cure hours; fire in the choir; little bottle; button; anxious; "
            "genre; usual; nothing; singer; yellow; water, huge, onion, rhythm, bird, car")
    run = lambda *a: subprocess.run([ESPEAK, "-v", "en-us", "-q", "--sep= ", *a, text],
                                    capture_output=True, text=True, check=True).stdout.split()
    mnemonics, ipa = run("-x"), run("--ipa")
    assert len(mnemonics) == len(ipa) > 150
    from_x = [alphabet.phone_to_viseme(p, "espeak") for p in mnemonics]
    from_ipa = [alphabet.phone_to_viseme(p, "ipa") for p in ipa]
    assert from_x == from_ipa
    assert len(set(from_x)) >= 12                # the text exercises nearly every class


# --------------------------------------------------------------------------- posteriors

def test_label_histogram_counts_groups():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=40)
    hist = posteriors.label_histogram(labels, 5, per_row=4)
    ref = np.stack([np.bincount(g, minlength=5) / 4 for g in labels.reshape(10, 4)])
    np.testing.assert_allclose(hist, ref, atol=0)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 0.6, 0.75, 1.5])
def test_soften_is_smoothing_then_gaussian_blur(sigma):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 14, size=60)
    eps = 0.1
    onehot = np.eye(14)[ids]
    out = posteriors.soften(onehot, eps=eps, sigma=sigma)
    ref = (1 - eps) * onehot + eps / 14
    if sigma > 0:       # scipy's Gaussian, replicated edges, truncated at 2 sigma
        ref = scipy.ndimage.gaussian_filter1d(ref, sigma, axis=0, mode="nearest",
                                              truncate=2.0)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    if sigma <= 0.75:   # documented: small blurs keep every frame's own label on top
        np.testing.assert_array_equal(out.argmax(axis=1), ids)


def test_fit_length_cuts_or_repeats_the_edge():
    x = np.array([3, 1, 2])
    np.testing.assert_array_equal(posteriors.fit_length(x, 2), [3, 1])
    np.testing.assert_array_equal(posteriors.fit_length(x, 5), [3, 1, 2, 2, 2])


# --------------------------------------------------------------------------- deep_avsr

from avdetect.teachers import convert, deep_avsr  # noqa: E402
from avdetect.teachers.errors import CheckpointError  # noqa: E402


def test_stft_front_end_matches_scipy_stft():
    rng = np.random.default_rng(2)
    audio = (0.3 * rng.standard_normal(16000 + 123)).astype(np.float32)
    T = 26                                                   # 1.04 s: needs wrap padding
    got = deep_avsr.stft_features(audio, T)
    x = audio.astype(np.float64) / np.abs(audio).max()
    x = x / np.sqrt(np.sum(x ** 2) / len(x))
    _, _, z = scipy.signal.stft(x, 16000, window="hamming", nperseg=640, noverlap=480,
                                boundary=None, padded=False)
    ref = np.abs(z).T
    ref = np.pad(ref, ((0, 4 * T - ref.shape[0]), (0, 0)), mode="wrap")[:4 * T]
    assert got.shape == (4 * T, 321)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert not np.any(deep_avsr.stft_features(np.zeros(5000), 3))   # silence stays zeros


try:
    import torch
except ImportError:      # only the parity tests need it; CI installs it (tests/requirements.txt)
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None, reason="torch (test-only, tests/requirements.txt) is needed to build the "
                          "PyTorch reference of the deep_avsr teachers")


def _ref_net(kind, num_layers, device=None):
    """deep_avsr AudioNet / VideoNet rebuilt from torch.nn modules with the original
    attribute names (so state_dict() carries the real key names), time-major inside."""
    tnn = torch.nn

    class PositionalEncoding(tnn.Module):   # a persistent [maxLen, 1, d] buffer 'pe'
        def __init__(self, d, max_len):
            super().__init__()
            pe = torch.zeros(max_len, d)
            pos = torch.arange(0, max_len, dtype=torch.float).unsqueeze(-1)
            den = torch.exp(torch.arange(0, d, 2).float() * (math.log(10000.0) / d))
            pe[:, 0::2] = torch.sin(pos / den)
            pe[:, 1::2] = torch.cos(pos / den)
            self.register_buffer("pe", pe.unsqueeze(0).transpose(0, 1))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            if kind == "audio":
                self.audioConv = tnn.Conv1d(321, 512, kernel_size=4, stride=4, device=device)
            self.positionalEncoding = PositionalEncoding(512, 2500)
            layer = tnn.TransformerEncoderLayer(512, 8, 2048, 0.1, device=device)
            setattr(self, f"{kind}Encoder", tnn.TransformerEncoder(
                layer, num_layers, enable_nested_tensor=False))
            setattr(self, f"{kind}Decoder", tnn.TransformerEncoder(
                layer, num_layers, enable_nested_tensor=False))
            self.outputConv = tnn.Conv1d(512, 40, kernel_size=1, device=device)

        def forward(self, x):                                 # [B, 4T, 321] or [B, T, 512]
            if kind == "audio":
                x = self.audioConv(x.transpose(1, 2)).transpose(1, 2)
            x = x.transpose(0, 1)                             # [T, B, 512]
            x = x + self.positionalEncoding.pe[:x.shape[0]]
            x = getattr(self, f"{kind}Encoder")(x)
            x = getattr(self, f"{kind}Decoder")(x)
            x = self.outputConv(x.permute(1, 2, 0)).transpose(1, 2)   # [B, T, 40]
            return torch.softmax(x, dim=-1)

    return Net()


def _random_ref(kind, num_layers, seed=0):
    torch.manual_seed(seed)
    net = _ref_net(kind, num_layers).eval()
    with torch.no_grad():     # sharper than default init, so the outputs are far from uniform
        net.outputConv.weight.mul_(20.0)
    return net


@pytest.fixture(scope="module")
def ref_nets():
    if torch is None:
        pytest.skip("torch is not installed")
    return {kind: _random_ref(kind, 2, seed=i) for i, kind in enumerate(convert.KINDS)}


@needs_torch
@pytest.mark.parametrize("kind", convert.KINDS)
def test_flax_port_matches_torch_reference(kind, ref_nets, tmp_path):
    net = ref_nets[kind]
    ckpt = tmp_path / f"{kind}.pt"
    torch.save(net.state_dict(), ckpt)
    out = convert.convert_checkpoint(ckpt, kind, tmp_path / "flax.safetensors", num_layers=2)
    loaded = deep_avsr.load_net(out)
    T = 37                                  # not a multiple of the padding bucket: masked
    width = 321 if kind == "audio" else 512
    rng = np.random.default_rng(3)
    x = rng.standard_normal(((4 if kind == "audio" else 1) * T, width)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[None])[0].numpy()
    got = loaded.posteriors(x)
    assert got.shape == ref.shape == (T, 40)
    assert ref.max(axis=1).mean() > 0.5     # a peaked reference: the check can fail
    err = np.abs(got - ref).max()
    assert err < 1e-4, err
    # long clips run in chunks that restart positions, like torch runs on each chunk
    per = 4 if kind == "audio" else 1
    with torch.no_grad():
        ref_chunks = np.concatenate([net(torch.from_numpy(x[a * per:b * per])[None])[0].numpy()
                                     for a, b in ((0, 20), (20, T))])
    np.testing.assert_allclose(loaded.posteriors(x, chunk=20), ref_chunks, atol=1e-4)


@needs_torch
@pytest.mark.parametrize("kind", convert.KINDS)
def test_full_6_plus_6_layout_keys_and_shapes(kind):
    ref = _ref_net(kind, 6, device="meta")          # real sizes, no memory
    torch_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert torch_shapes == convert.expected_torch_shapes(kind, 6)
    zeros = {k: np.broadcast_to(np.float32(0), s) for k, s in torch_shapes.items()}
    zeros["positionalEncoding.pe"] = deep_avsr.positional_encoding(2500)[:, None, :]
    params = convert.convert_state_dict(zeros, kind, 6)
    flax_shapes = {k: v.shape for k, v in deep_avsr.flatten_params(params).items()}
    assert flax_shapes == deep_avsr.param_shapes(convert.build_module(kind, 6))
    n = sum(math.prod(s) for s in flax_shapes.values())
    assert n == sum(math.prod(s) for k, s in torch_shapes.items() if not k.endswith(".pe"))


def _state(kind="audio", layers=1):
    """A random numpy state dict with the deep_avsr key names and shapes (no torch)."""
    rng = np.random.default_rng(5)
    state = {k: rng.standard_normal(shape).astype(np.float32)
             for k, shape in convert.expected_torch_shapes(kind, layers).items()}
    state["positionalEncoding.pe"] = deep_avsr.positional_encoding(2500)[:, None, :]
    return state


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("audioEncoder.layers.0.norm2.bias"),
     r"1 missing: audioEncoder\.layers\.0\.norm2\.bias"),
    (lambda s: s.__setitem__("audioEncoder.norm.weight", np.ones(512, np.float32)),
     r"1 unexpected: audioEncoder\.norm\.weight"),
    (lambda s: s.__setitem__("outputConv.weight", np.ones((41, 512, 1), np.float32)),
     r"outputConv\.weight \(41, 512, 1\) != expected \(40, 512, 1\)"),
])
def test_strict_conversion_names_bad_keys(edit, message):
    state = _state()
    edit(state)
    with pytest.raises(CheckpointError, match=message) as info:
        convert.convert_state_dict(state, "audio", 1, source="audio-only.pt")
    assert info.value.path == "audio-only.pt"


def test_wrong_depth_and_fake_positional_table_are_rejected():
    state = _state(layers=1)
    with pytest.raises(CheckpointError, match=r"missing: audioDecoder\.layers\.1\."):
        convert.convert_state_dict(state, "audio", 2)
    state["positionalEncoding.pe"] = state["positionalEncoding.pe"] + 0.5
    with pytest.raises(CheckpointError, match="sinusoidal"):
        convert.convert_state_dict(state, "audio", 1)


class _NotATensor:
    pass


@needs_torch
def test_checkpoint_loading_is_weights_only_and_unwraps_dataparallel(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"x": _NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="weights_only") as info:
        convert.load_torch_state_dict(evil)
    assert info.value.path == str(evil)
    state = _random_ref("video", 1).state_dict()
    wrapped = tmp_path / "dp.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    loaded = convert.load_torch_state_dict(wrapped)
    assert set(loaded) == set(state)
    (tmp_path / "empty.pt").write_bytes(b"")
    from avdetect.errors import EmptyFileError, FileMissingError
    with pytest.raises(EmptyFileError):
        convert.load_torch_state_dict(tmp_path / "empty.pt")
    with pytest.raises(FileMissingError):
        convert.load_torch_state_dict(tmp_path / "absent.pt")


@needs_torch
def test_convert_cli_and_deep_avsr_teacher(ref_nets, tmp_path, capsys):
    for kind, net in ref_nets.items():
        torch.save(net.state_dict(), tmp_path / f"{kind}-only.pt")
    out = tmp_path / "flax"
    rc = convert.main(["--audio", str(tmp_path / "audio-only.pt"), "--video",
                       str(tmp_path / "video-only.pt"), "--out", str(out), "--num-layers", "2"])
    assert rc == 0 and "audio_net.safetensors" in capsys.readouterr().out
    # a wrong depth fails with the reason on stderr and exit status 1
    assert convert.main(["--audio", str(tmp_path / "audio-only.pt"), "--out", str(out / "x")]) == 1
    assert "missing" in capsys.readouterr().err

    from avdetect.teachers import get_teacher
    teacher = get_teacher("deep_avsr", params_dir=out)
    assert teacher.sides == {"audio", "video"} and teacher.num_classes == 40
    T = 30
    rng = np.random.default_rng(4)
    audio = (0.1 * rng.standard_normal(T * 640)).astype(np.float32)
    lips = rng.standard_normal((T - 3, 512)).astype(np.float32)    # short: wrap-padded
    pa, pv = teacher(audio=audio, mouth=None, num_frames=T, meta={"lip_features": lips})
    assert pa.shape == pv.shape == (T, 40)
    np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)
    with torch.no_grad():
        ref_a = ref_nets["audio"](torch.from_numpy(deep_avsr.stft_features(audio, T))[None])
        ref_v = ref_nets["video"](torch.from_numpy(np.concatenate([lips, lips[:3]]))[None])
    np.testing.assert_allclose(pa, ref_a[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(pv, ref_v[0].numpy(), atol=1e-4)
    # without lip features the VSR side has no input: the teacher abstains
    assert teacher(audio=audio, mouth=None, num_frames=T, meta={}) is None


def _ref_frontend():
    """deep_avsr's VisualFrontend written with torch.nn for this test (attribute names as
    in its visual_frontend.py, so state_dict() carries the real keys): Conv3d stem over
    the clip, ResNet-18 whose every layer owns a 1x1 ``downsample`` used only at stride 2."""
    tnn, F = torch.nn, torch.nn.functional

    def bn(c):
        return tnn.BatchNorm2d(c, momentum=0.01, eps=0.001)

    class Layer(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.stride = stride
            self.conv1a = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1a = bn(cout)
            self.conv2a = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.downsample = tnn.Conv2d(cin, cout, 1, stride, bias=False)
            self.outbna = bn(cout)
            self.conv1b = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn1b = bn(cout)
            self.conv2b = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.outbnb = bn(cout)

        def forward(self, x):
            skip = x if self.stride == 1 else self.downsample(x)
            mid = self.conv2a(F.relu(self.bn1a(self.conv1a(x)))) + skip
            y = F.relu(self.outbna(mid))
            y = self.conv2b(F.relu(self.bn1b(self.conv1b(y)))) + mid
            return F.relu(self.outbnb(y))

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.layer1, self.layer2 = Layer(64, 64, 1), Layer(64, 128, 2)
            self.layer3, self.layer4 = Layer(128, 256, 2), Layer(256, 512, 2)
            self.avgpool = tnn.AvgPool2d(4, 1)

        def forward(self, x):
            return self.avgpool(self.layer4(self.layer3(self.layer2(self.layer1(x)))))

    class Frontend(tnn.Module):
        def __init__(self):
            super().__init__()
            self.frontend3D = tnn.Sequential(
                tnn.Conv3d(1, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
                tnn.BatchNorm3d(64, momentum=0.01, eps=0.001), tnn.ReLU(),
                tnn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
            self.resnet = ResNet()

        def forward(self, frames):                       # [T, 112, 112] normalised
            y = self.frontend3D(frames[None, None])      # [1, 64, T, 28, 28]
            y = y[0].transpose(0, 1)                     # [T, 64, 28, 28]
            return self.resnet(y).reshape(-1, 512)       # [T, 512]

    torch.manual_seed(7)
    net = Frontend().eval()
    with torch.no_grad():       # non-trivial running statistics, so the BN mapping counts
        for m in net.modules():
            if isinstance(m, (tnn.BatchNorm2d, tnn.BatchNorm3d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(123)
    return net


def _mouth_clip(t, seed=0, size=88):
    """Smooth moving uint8 blobs: crops with structure at every scale the net sees."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = []
    for i in range(t):
        img = 128 + 60 * np.sin(6 * xx + 0.3 * i) * np.cos(5 * yy - 0.2 * i)
        frames.append(img + rng.normal(0, 8, img.shape))
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ref_frontend(tmp_path_factory):
    if torch is None:
        pytest.skip("torch is not installed")
    net = _ref_frontend()
    ckpt = tmp_path_factory.mktemp("frontend") / "visual_frontend.pt"
    torch.save(net.state_dict(), ckpt)
    return net, ckpt


@needs_torch
def test_visual_frontend_keys_and_parity_with_torch(ref_frontend, tmp_path):
    import cv2
    net, ckpt = ref_frontend
    state = net.state_dict()
    # every key of deep_avsr's state dict, incl. layer1's unused downsample and the BN
    # counters, is expected with its shape - and nothing else
    assert {k: tuple(v.shape) for k, v in state.items()} == \
        convert.expected_torch_shapes("frontend")
    assert "resnet.layer1.downsample.weight" in state
    out = convert.convert_checkpoint(ckpt, "frontend", tmp_path / "vf.safetensors")
    loaded = deep_avsr.load_net(out)
    assert isinstance(loaded.module, deep_avsr.VisualFrontend)
    T = 7
    mouth = _mouth_clip(T)
    # deep_avsr's preprocessing written out: gray/255 -> cv2 resize -> normalise
    x = np.stack([cv2.resize(f.astype(np.float32) / 255.0, (112, 112)) for f in mouth])
    x = (x - 0.4161) / 0.1688
    with torch.no_grad():
        ref = net(torch.from_numpy(x.astype(np.float32))).numpy()
    got = loaded.lip_features(mouth)
    assert got.shape == ref.shape == (T, 512)
    assert ref.std() > 0.05                     # features vary: the comparison can fail
    err = np.abs(got - ref).max()
    assert err <= 1e-4, err
    # chunked runs (context frames on each side) equal one pass over the clip
    np.testing.assert_allclose(loaded.lip_features(mouth, chunk=3), got, atol=1e-5)


@needs_torch
def test_frontend_conversion_names_bad_keys(ref_frontend):
    state = {k: v.numpy() for k, v in ref_frontend[0].state_dict().items()}
    state.pop("resnet.layer1.downsample.weight")
    state.pop("frontend3D.1.num_batches_tracked")
    state["resnet.fc.weight"] = np.zeros((2, 512), np.float32)
    state["resnet.layer3.conv2b.weight"] = np.zeros((256, 128, 3, 3), np.float32)
    with pytest.raises(CheckpointError) as info:
        convert.convert_state_dict(state, "frontend", source="visual_frontend.pt")
    msg = str(info.value)
    assert "2 missing: frontend3D.1.num_batches_tracked, resnet.layer1.downsample.weight" in msg
    assert "1 unexpected: resnet.fc.weight" in msg
    assert "resnet.layer3.conv2b.weight (256, 128, 3, 3) != expected (256, 256, 3, 3)" in msg
    assert info.value.path == "visual_frontend.pt"


@needs_torch
def test_deep_avsr_teacher_reads_lips_from_mouth_crops(ref_nets, ref_frontend, tmp_path,
                                                       capsys):
    """deep_avsr:DIR with all three converted checkpoints fills both sides from the
    clip's audio and mouth crops: VideoNet on the front end's features, as in torch."""
    for kind, net in ref_nets.items():
        torch.save(net.state_dict(), tmp_path / f"{kind}-only.pt")
    out = tmp_path / "flax"
    rc = convert.main(["--audio", str(tmp_path / "audio-only.pt"), "--video",
                       str(tmp_path / "video-only.pt"), "--frontend", str(ref_frontend[1]),
                       "--out", str(out), "--num-layers", "2"])
    assert rc == 0 and "visual_frontend.safetensors" in capsys.readouterr().out
    from avdetect.teachers import resolve_teacher
    teacher = resolve_teacher(f"deep_avsr:{out}").teacher
    assert teacher.sides == {"audio", "video"} and teacher.frontend is not None
    T = 6
    mouth = _mouth_clip(T, seed=1)
    audio = (0.1 * np.random.default_rng(0).standard_normal(T * 640)).astype(np.float32)
    pa, pv = teacher(audio=audio, mouth=mouth, num_frames=T, meta={})
    lips = teacher.frontend.lip_features(mouth)
    with torch.no_grad():
        ref_v = ref_nets["video"](torch.from_numpy(lips)[None])[0].numpy()
    np.testing.assert_allclose(pv, ref_v, atol=1e-4)
    np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)
    # a video-side net without a front end or lip features still abstains
    only_video = deep_avsr.DeepAVSRTeacher(video_params=out / "video_net.safetensors")
    assert only_video(audio=None, mouth=mouth, num_frames=T, meta={}) is None


# --------------------------------------------------------------------------- asr_align

from avdetect.teachers import asr_align  # noqa: E402

SR = 16000


def _espeak(text: str, path: pathlib.Path, rate: int = 140) -> np.ndarray:
    import librosa
    subprocess.run([ESPEAK, "-v", "en-us", "-s", str(rate), "-w", str(path), text], check=True)
    audio, _ = librosa.load(path, sr=SR)
    return audio


# espeak-ng through its C library (ctypes) in a fresh interpreter: the synthesised
# samples plus espeak's own phoneme and word events, the timing reference of the aligner
# tests. A fresh process per text because espeak-ng carries state (pitch flutter, noise)
# from one synthesis to the next, which would make the audio depend on test order.
_ESPEAK_CHILD = r"""
import ctypes, sys, numpy as np
class Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]
class Event(ctypes.Structure):      # espeak_EVENT of speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", Id)]
lib = ctypes.CDLL("libespeak-ng.so.1")
rate = lib.espeak_Initialize(2, 0, None, 1)   # SYNCHRONOUS, INITIALIZE_PHONEME_EVENTS
samples, names, times = [], [], []
def callback(wav, n, events):
    if n > 0:
        samples.append(np.ctypeslib.as_array(wav, (n,)).copy())
    i = 0
    while events[i].type != 0:                 # LIST_TERMINATED
        e = events[i]
        if e.type in (1, 7):                   # WORD, PHONEME
            names.append("<word>" if e.type == 1 else e.id.string.decode())
            times.append(e.audio_position)     # ms
        i += 1
    return 0
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                      ctypes.POINTER(Event))(callback)
lib.espeak_SetSynthCallback(cb)
lib.espeak_SetVoiceByName(b"en-us")
lib.espeak_SetParameter(1, int(sys.argv[2]), 0)  # espeakRATE
text = sys.argv[1].encode()
lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 0, None, None)
lib.espeak_Synchronize()
np.savez(sys.argv[3], audio=np.concatenate(samples), rate=rate, names=np.array(names),
         times=np.array(times))
"""


def _espeak_events(text: str, out: pathlib.Path, rate: int = 150):
    """-> (16 kHz audio, [(phone, start_s)], [word_start_s]) for ``text``."""
    import librosa
    import sys
    subprocess.run([sys.executable, "-c", _ESPEAK_CHILD, text, str(rate), str(out)],
                   check=True, capture_output=True)
    with np.load(out) as z:
        audio = z["audio"].astype(np.float32) / 32768.0
        audio = librosa.resample(audio, orig_sr=int(z["rate"]), target_sr=SR)
        events = list(zip(z["names"].tolist(), (z["times"] / 1000).tolist()))
    phones, word_starts, new_word = [], [], False
    for name, t in events:
        if name == "<word>":
            new_word = True
            continue
        if new_word and not name.startswith("_"):
            word_starts.append(t)             # the word's first phone, not its lead-in
            new_word = False
        phones.append((name, t))
    return audio, phones, word_starts


@pytest.fixture(scope="module")
def espeak_events(tmp_path_factory):
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("espeak")
    try:
        _espeak_events("test", folder / "probe.npz")
    except subprocess.CalledProcessError as e:
        pytest.skip(f"libespeak-ng.so.1 unusable: {e.stderr.decode()[-300:]}")
    count = iter(range(10**6))
    return lambda text: _espeak_events(text, folder / f"{next(count)}.npz")


SENTENCES = ["please give me the red cup, of water", "she told a long story about the old city",
             "many people think that green fields look good",
             "seven bright fish swam past my window today"]


def _word_starts(segments):
    starts, previous = [], None
    for s in segments:
        if alphabet.phone_to_viseme(s.phone) == alphabet.SILENCE:
            previous = None
            continue
        if s.word != previous:
            starts.append((s.word, s.start))
            previous = s.word
    return starts


def _reference_visemes(phones, n):
    """Viseme id per 10 ms frame from espeak's phone start times."""
    out = np.full(n, alphabet.VISEME_INDEX[alphabet.SILENCE])
    ends = [t for _, t in phones[1:]] + [n / 100]
    for (name, start), end in zip(phones, ends):
        out[int(round(start * 100)):int(round(end * 100))] = \
            alphabet.VISEME_INDEX[alphabet.phone_to_viseme(name, "espeak")]
    return out


def test_forced_alignment_matches_espeak_phone_timing(espeak_events):
    aligner = asr_align.SphinxAligner()
    errors, agreement = [], []
    for text in SENTENCES:
        audio, phones, ref_starts = espeak_events(text)
        segments = aligner.align(audio, text.replace(",", "").split())
        starts = _word_starts(segments)
        assert [w for w, _ in starts] == text.replace(",", "").split()
        for w, _ in starts:        # the phones come from the dictionary
            assert aligner.decoder.lookup_word(w) is not None
        errors += [got - ref for (_, got), ref in zip(starts, ref_starts)]
        n = len(audio) // 160
        ref = _reference_visemes(phones, n)
        got = asr_align.segments_to_visemes(segments, n // 4 + 1)[:n]
        speech = ref != alphabet.VISEME_INDEX[alphabet.SILENCE]
        agreement.append(np.mean(got[speech] == ref[speech]))
    errors = np.abs(errors)
    # Word onsets within ~60 ms of espeak's own phone events (measured at 130/150/170
    # wpm: median 9-12 ms, 94-97 % within 60 ms, worst 141 ms: the real-speech acoustic
    # model sometimes stretches a robotic vowel); 10 ms viseme labels agree on ~3/4 of
    # the speech frames.
    assert np.median(errors) < 0.030, np.round(errors, 3)
    assert np.mean(errors < 0.060) > 0.85, np.round(errors, 3)
    assert errors.max() < 0.200, np.round(errors, 3)
    assert np.mean(agreement) > 0.65, agreement


def test_audio_posteriors_follow_speech_and_silence(espeak_events):
    teacher = asr_align.AsrAlignTeacher()
    text = SENTENCES[0]
    audio, phones, _ = espeak_events(text)
    lead = 0.4                           # known silence around the sentence
    audio = np.pad(audio, (int(lead * SR), int(lead * SR)))
    phones = [("_", 0.0)] + [(n, t + lead) for n, t in phones]
    T = len(audio) // 640
    pa, pv = teacher(audio=audio, mouth=None, num_frames=T, meta={"transcript": text})
    assert pa.shape == pv.shape == (T, alphabet.NUM_VISEMES)
    np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(pv, 1 / alphabet.NUM_VISEMES)      # no video side
    assert teacher.sides == {"audio"}
    # video frames wholly inside espeak pauses of >= 120 ms are silence, and most frames
    # wholly inside a phone get that phone's viseme (majority of the 40 ms frame)
    ref = _reference_visemes(phones, 4 * T).reshape(T, 4)
    whole = (ref == ref[:, :1]).all(axis=1)
    sil = alphabet.VISEME_INDEX[alphabet.SILENCE]
    top = pa.argmax(1)
    ends = [t for _, t in phones[1:]] + [len(audio) / SR]
    pauses = [(a, b) for (n, a), b in zip(phones, ends) if n.startswith("_") and b - a >= 0.12]
    assert len(pauses) == 3                             # lead-in, comma, trailing silence
    for a, b in pauses:
        inside = np.arange(int(math.ceil(a * 25)), int(b * 25))
        assert np.all(top[inside] == sil), (a, b, top[inside])
    speech = whole & (ref[:, 0] != sil)
    assert np.mean(top[speech] == ref[speech, 0]) > 0.65
    # no audio or silence: nothing to say
    assert teacher(audio=None, mouth=None, num_frames=T, meta={}) is None
    assert teacher(audio=np.zeros(6400), mouth=None, num_frames=10, meta={}) is None


def test_transcript_normalisation():
    known = {"i", "have", "twenty", "one", "cats", "don't", "john"}.__contains__
    words, dropped = asr_align.normalize_transcript("I have 21 cats, don’t I? John's Xzq!",
                                                    known)
    assert words == ["i", "have", "twenty", "one", "cats", "don't", "i", "john"]
    assert dropped == ["xzq"]
    assert asr_align.number_to_words(1905) == "one thousand nine hundred five"
    assert asr_align.tokens_to_text(["<|startoftranscript|>", "ĠThe", "Ġcaf", "Ã©", "."]) \
        == "The café."


@needs_espeak
def test_whisper_transcript_then_alignment(tmp_path):
    pytest.importorskip("ctranslate2", reason="ctranslate2 runs the Whisper tiny.en model")
    from avdetect.pretrained import whisper
    try:
        whisper.default_tiny_en_dir()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Whisper tiny.en model package missing: {e}")
    text = "she told a long story about the old city"
    audio = _espeak(text, tmp_path / "s.wav", rate=130)
    teacher = asr_align.AsrAlignTeacher()
    heard = teacher.transcriber(audio)
    got, _ = asr_align.normalize_transcript(heard, lambda w: True)
    recall = np.mean([w in got for w in text.split()])
    assert recall >= 0.75, heard
    T = len(audio) // 640
    pa, _ = teacher(audio=audio, mouth=None, num_frames=T, meta={})    # recognition path
    voiced = np.flatnonzero(pa.argmax(1) != alphabet.VISEME_INDEX[alphabet.SILENCE])
    import librosa
    rms = librosa.feature.rms(y=audio, frame_length=640, hop_length=640, center=False)[0]
    loud = np.flatnonzero(rms > 0.1 * rms.max())
    assert abs(voiced[0] - loud[0]) <= 2 and abs(voiced[-1] - loud[-1]) <= 3


# --------------------------------------------------------------------------- registry

from avdetect import teachers  # noqa: E402


class _Recorder:
    """A stand-in teacher that records what it was called with."""
    name, num_classes, sides = "recorder", 3, frozenset({"audio", "video"})

    def __init__(self, needs_audio=True):
        self.needs_audio, self.calls = needs_audio, []

    def __call__(self, *, audio, mouth, num_frames, meta):
        self.calls.append((audio, num_frames, meta))
        rows = np.eye(3, dtype=np.float32)[np.arange(num_frames) % 3]
        return rows, rows[::-1].copy()


def test_registry_and_pairing():
    assert {"oracle", "asr_align", "deep_avsr", "vsr_self"} <= set(teachers.TEACHERS)
    with pytest.raises(ValueError, match="unknown teacher 'nope'"):
        teachers.get_teacher("nope")
    a, v = _Recorder(), _Recorder()
    v.sides = frozenset({"video"})
    pair = teachers.PairedTeacher(a, v)
    pa, pv = pair(audio=None, mouth=None, num_frames=4, meta={})
    np.testing.assert_array_equal(pa.argmax(1), [0, 1, 2, 0])
    np.testing.assert_array_equal(pv.argmax(1), [0, 2, 1, 0])
    assert pair.sides == {"audio", "video"}
    asr = teachers.get_teacher("asr_align")
    assert isinstance(asr, teachers.Teacher)
    with pytest.raises(ValueError, match="cannot pair"):
        teachers.PairedTeacher(asr, a)


def test_teacher_specs_by_name_pair_options_and_module(monkeypatch):
    """--teacher NAME[:ARGS], A+B and module:function resolve to build teachers whose
    sides say what they fill; bad specs raise ConfigError naming the problem."""
    from avdetect.errors import ConfigError
    oracle_t = teachers.resolve_teacher("oracle:label_smoothing=0.2,blur_sigma=0")
    assert oracle_t.teacher.label_smoothing == 0.2 and oracle_t.teacher.blur_sigma == 0
    assert oracle_t.sides == {"audio", "video"} and oracle_t.num_classes == 14
    assert teachers.teacher_sides(teachers.resolve_teacher("asr_align")) == ["audio"]
    pair = teachers.resolve_teacher("asr_align+oracle")
    assert pair.sides == {"audio", "video"} and pair.name == "asr_align+oracle"
    assert isinstance(pair.teacher.audio_teacher, asr_align.AsrAlignTeacher)
    assert pair.cache_key != teachers.resolve_teacher("oracle+oracle").cache_key
    with pytest.raises(ConfigError, match="fills no video side"):
        teachers.resolve_teacher("oracle+asr_align")
    def untrained(**kw):
        raise ConfigError("teacher 'vsr_self' is not trained yet")
    monkeypatch.setitem(teachers.TEACHERS, "vsr_self", untrained)
    with pytest.raises(ConfigError, match="not trained yet"):    # a refusing factory's error
        teachers.resolve_teacher("asr_align+vsr_self")             # surfaces as is
    with pytest.raises(ConfigError, match="unknown teacher 'nope'"):
        teachers.resolve_teacher("nope")
    with pytest.raises(ConfigError, match="no bare argument"):
        teachers.resolve_teacher("oracle:/some/dir")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        teachers.resolve_teacher("asr_align:beam=3")
    # deep_avsr:DIR fills params_dir (the folder is checked by the teacher itself)
    seen = {}
    monkeypatch.setitem(teachers.TEACHERS, "deep_avsr",
                        lambda **kw: seen.update(kw) or _Recorder())
    teachers.resolve_teacher("deep_avsr:/models/avsr")
    assert seen == {"params_dir": "/models/avsr"}
    # a registered replacement (how vsr_self lands) is used by name
    monkeypatch.setitem(teachers.TEACHERS, "vsr_self", lambda **kw: _video_only())
    assert teachers.resolve_teacher("oracle+vsr_self").sides == {"audio", "video"}
    # a user's own function: both sides unless it says otherwise
    fn = teachers.resolve_teacher("avdetect.teachers.posteriors:uniform")
    assert fn is posteriors.uniform and teachers.teacher_sides(fn) == ["audio", "video"]


def _video_only():
    t = _Recorder()
    t.name, t.num_classes, t.sides = "vsr_self", 14, frozenset({"video"})
    return t


def test_build_adapter_decodes_audio_only_when_needed(realav_clips):
    clip = realav_clips[0]
    mouth = np.zeros((50, 88, 88), np.uint8)
    rec = _Recorder()
    adapter = teachers.BuildTeacher(rec, eps=0.1)
    pa, _ = adapter({"mouth": mouth}, {"path": str(clip)})
    audio, num_frames, meta = rec.calls[-1]
    assert pa.shape == (50, 3) and num_frames == 50 and meta == {"path": str(clip)}
    assert audio.shape == (50 * 640,) and np.abs(audio).max() > 0.01   # real speech
    quiet = _Recorder(needs_audio=False)
    teachers.BuildTeacher(quiet)({"mouth": mouth}, {"path": str(clip)})
    assert quiet.calls[-1][0] is None
    assert adapter.cache_key == "avdetect.teachers.recorder(eps=0.1)"
    import pickle
    assert pickle.loads(pickle.dumps(teachers.build_teacher("asr_align"))).cache_key


# --------------------------------------------------------------------------- oracle

import json  # noqa: E402

from avdetect.teachers import oracle  # noqa: E402
from avdetect.teachers.errors import GroundTruthError  # noqa: E402

ARPA = ("SIL", "P", "B", "M", "AA", "IY", "UW", "S", "T", "F", "OW")


def _write_truth(folder: pathlib.Path, clip: str, heard: list[str], shown: list[str] | None,
                 **extra) -> pathlib.Path:
    """A ground-truth pair in the generator's format: <folder>/alphabet.json (written once)
    and <folder>/a/b/<clip>.npz; ``shown`` None means the mouth follows no phone (-1)."""
    (folder / "alphabet.json").write_text(json.dumps({"phones": list(ARPA),
                                                      "phone_scheme": "arpabet"}))
    sub = folder / "a" / "b"
    sub.mkdir(parents=True, exist_ok=True)
    idx = {p: i for i, p in enumerate(ARPA)}
    arrays = {"phone": np.array([idx[p] for p in heard], np.int16),
              "video_phone": np.array([-1] * len(heard) if shown is None
                                      else [idx[p] for p in shown], np.int16), **extra}
    np.savez(sub / f"{clip}.npz", **arrays)
    return sub / f"{clip}.mp4"          # the video path a dataset row carries


def _divergence(p, q):
    """The reference's per-frame "JS": class-averaged symmetric KL (papers.md B.2)."""
    return 0.5 * (np.mean(p * np.log(p / q), 1) + np.mean(q * np.log(q / p), 1))


def test_oracle_posteriors_follow_the_tracks(tmp_path):
    heard = ["SIL"] * 3 + ["P", "AA", "AA", "M", "IY", "IY", "S", "T", "UW", "F"] + ["SIL"] * 2
    video = _write_truth(tmp_path, "real", heard, heard)
    teacher = oracle.OracleTeacher()
    T = len(heard)
    pa, pv = teacher(num_frames=T, meta={"path": str(video)})
    assert pa.shape == pv.shape == (T, alphabet.NUM_VISEMES) and pa.dtype == np.float32
    np.testing.assert_allclose(pa.sum(1), 1, atol=1e-6)
    want = [alphabet.VISEME_INDEX[alphabet.phone_to_viseme(p)] for p in heard]
    np.testing.assert_array_equal(pa.argmax(1), want)
    np.testing.assert_array_equal(pv, pa)                      # a real clip: r_t == 1
    assert np.all(pa.max(1) < 1.0) and np.all(pa.min(1) > 0)   # smoothed, not one-hot
    # the documented knobs: no smoothing and no blur give the exact one-hot rows
    exact, _ = oracle.OracleTeacher(label_smoothing=0.0, blur_sigma=0.0)(
        num_frames=T, meta={"path": str(video)})
    np.testing.assert_array_equal(exact, np.eye(alphabet.NUM_VISEMES)[want])
    # a decoded video a frame longer / shorter than the tracks: edge-extended / cut
    longer, _ = teacher(num_frames=T + 2, meta={"path": str(video)})
    np.testing.assert_allclose(longer[:T - 1], pa[:T - 1], atol=1e-6)
    assert longer.shape[0] == T + 2 and longer[-1].argmax() == want[-1]


def test_oracle_disagrees_where_heard_and_shown_differ(tmp_path):
    shown = ["SIL", "SIL", "P", "AA", "AA", "M", "IY", "IY", "SIL", "SIL"]
    other = ["SIL", "SIL", "S", "UW", "UW", "F", "OW", "T", "SIL", "SIL"]   # other words
    shifted = ["SIL"] * 3 + shown[:-3]                                      # desync
    teacher = oracle.OracleTeacher()
    T = len(shown)
    for heard in (other, shifted):
        video = _write_truth(tmp_path, "fake", heard, shown)
        pa, pv = teacher(num_frames=T, meta={"path": str(video)})
        r = 1 - _divergence(pa, pv)
        differ = np.array([alphabet.phone_to_viseme(a) != alphabet.phone_to_viseme(b)
                           for a, b in zip(heard, shown)])
        assert differ.any()
        np.testing.assert_array_equal(pa.argmax(1) != pv.argmax(1), differ)
        assert r[differ].max() < 0.85 and r[~differ].min() > 0.85


def test_oracle_reads_the_mouth_shape_when_it_follows_no_phone(tmp_path):
    # a talking head: the jaw follows the energy, lips neutral (never rounded)
    openness = np.array([0.0, 0.0, 0.3, 0.9, 0.95, 0.6, 0.1, 0.0], np.float32)
    heard = ["SIL", "SIL", "UW", "AA", "AA", "OW", "M", "SIL"]
    video = _write_truth(tmp_path, "th", heard, None, mouth_open=openness,
                         mouth_width=np.full(8, 0.5, np.float32),
                         mouth_round=np.zeros(8, np.float32))
    pa, pv = oracle.OracleTeacher()(num_frames=8, meta={"path": str(video)})
    shown = [alphabet.VISEMES[i] for i in pv.argmax(1)]
    assert shown[0] == shown[1] == "sil" and shown[3] == shown[4] == "AA"
    assert not {"W", "OW", "SH", "R"} & set(shown)          # no rounding is ever shown
    assert pa.argmax(1)[2] == alphabet.VISEME_INDEX["W"]    # ... while /u/ is heard
    # without mouth curves such frames carry no information: uniform before smoothing
    video = _write_truth(tmp_path, "th2", heard, None)
    _, pv = oracle.OracleTeacher(blur_sigma=0.0)(num_frames=8, meta={"path": str(video)})
    np.testing.assert_allclose(pv, 1 / alphabet.NUM_VISEMES, atol=1e-6)


def test_oracle_without_or_with_broken_ground_truth(tmp_path):
    teacher = oracle.OracleTeacher()
    assert teacher(num_frames=5, meta={}) is None                       # no path
    assert teacher(num_frames=5, meta={"path": str(tmp_path / "x.mp4")}) is None
    video = _write_truth(tmp_path, "ok", ["SIL", "P"], ["SIL", "P"])
    bad = video.with_name("bad.npz")
    np.savez(bad, phone=np.zeros(3, np.int16))                          # no video_phone
    with pytest.raises(GroundTruthError, match="video_phone") as info:
        teacher(num_frames=3, meta={"ground_truth": str(bad)})
    assert info.value.path == str(bad)
    with pytest.raises(GroundTruthError, match="does not exist"):
        teacher(num_frames=3, meta={"ground_truth": str(tmp_path / "gone.npz")})
    (tmp_path / "alphabet.json").write_text(json.dumps({"phones": ["SIL", "QQ"],
                                                        "phone_scheme": "arpabet"}))
    oracle.phone_visemes.cache_clear()
    with pytest.raises(GroundTruthError, match="QQ"):
        teacher(num_frames=2, meta={"path": str(video)})
    oracle.phone_visemes.cache_clear()
    lonely = tmp_path.parent / "lonely_truth"
    lonely.mkdir()
    np.savez(lonely / "c.npz", phone=np.zeros(2, np.int16), video_phone=np.zeros(2, np.int16))
    with pytest.raises(GroundTruthError, match="alphabet.json"):
        teacher(num_frames=2, meta={"ground_truth": str(lonely / "c.npz")})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A few clips from the real generator: every single-modality method once."""
    generate = pytest.importorskip("datasets.synthetic_av.generate")
    out = tmp_path_factory.mktemp("synthetic")
    methods = ["lipsync", "faceswap", "voiceclone", "voiceconvert", "talkinghead", "desync"]
    meta = generate.generate(out, num_clips=12, seconds=2.0, size=96, workers=2,
                             progress=False, real_fraction=0.5,
                             method_weights={m: 1.0 for m in methods})
    import csv
    with open(meta) as f:
        rows = [{**r, "path": str(out / r["path"])} for r in csv.DictReader(f)]
    assert {r["method"] for r in rows} == set(methods) | {"real"}
    return rows


def test_oracle_on_generator_output(generated):
    teacher = teachers.build_teacher("oracle")                # as the dataset builder runs it
    for row in generated:
        T = int(row["num_frames"])
        pa, pv = teacher({"mouth": np.zeros((T, 88, 88), np.uint8)}, row)
        np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)
        np.testing.assert_allclose(pv.sum(1), 1, atol=1e-5)
        with np.load(pathlib.Path(row["path"]).with_suffix(".npz")) as z:
            # the generator's own viseme tracks (its phone->viseme table)
            np.testing.assert_array_equal(pa.argmax(1), z["viseme"])
            follows = z["video_viseme"] >= 0
            np.testing.assert_array_equal(pv.argmax(1)[follows], z["video_viseme"][follows])
            manipulated = z["video_manipulated"] | z["audio_manipulated"]
        r = 1 - _divergence(pa, pv)
        disagree = pa.argmax(1) != pv.argmax(1)
        if row["method"] in ("real", "voiceconvert", "faceswap", "lipsync"):
            # the lips follow the heard phones (lipsync re-renders them FROM the new audio)
            np.testing.assert_allclose(r, 1.0, atol=1e-6)
        else:                           # voiceclone, desync, talkinghead
            assert manipulated.any() and disagree[manipulated].mean() > 0.3, row["method"]
            assert not disagree[~manipulated].any()
            # the blur (radius 1 frame at sigma 0.6) only reaches direct neighbours
            near = np.convolve(disagree.astype(float), np.ones(3), mode="same") > 0
            np.testing.assert_allclose(r[~near], 1.0, atol=1e-6)
            assert r[disagree].mean() < 0.9
