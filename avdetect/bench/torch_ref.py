"""An independent PyTorch implementation of the correlation-distillation paper's student
(the TalkNet layout, papers.md B.1), written for this project from the architecture
description - for the same-run speed comparison (``avdetect.bench.peer_bench``) and as the
source side of the checkpoint converter's parity test (``tests/test_talknet_convert.py``).

torch is a test / benchmark dependency only (tests/requirements.txt): it is imported when
:func:`build` is called, never by the package itself.

Its ``state_dict()`` has exactly the reference's names and shapes
(../shared/research/talknet_state_dict.tsv: ``model.*`` = the student, 15,743,451
parameters; ``lossAV.FC`` = the per-frame classifier; ``lossCont_Spea.projection_A/B`` =
the loss module's two projections that the reference defines and never uses).

Two behaviours of the reference are kept on purpose:

* **Stem over the whole batch.** The reference flattens the clips to B*T frames and then
  hands its (5,7,7) Conv3d *one* sequence of B*T frames (its front end swaps the first
  three axes of the [B*T, 1, 1, H, W] tensor), so the temporal taps do act: each frame
  sees +-2 neighbours, and at a clip's first / last two frames those neighbours belong to
  the previous / next clip of the batch. ``stem_per_clip=True`` pads each clip on its own
  instead (what our Flax ``visual.stem='3d'`` computes); for B = 1 both are the same.
* **Cross-attention quirk**: query = target, key = value = source, residual on the source.
"""

from __future__ import annotations

import math

# Grayscale normalisation of the lip front end (same constants as avdetect.models.visual).
MOUTH_MEAN, MOUTH_STD = 0.4161, 0.1688
N_MODEL_PARAMS = 15_743_451     # the reference student, as peer_baseline.md counts it


# The reference's sizes. Smaller ones (same layout, two blocks per trunk stage) make tiny
# checkpoints for tests; ``flax_overrides`` gives the matching avdetect config fields.
FULL = dict(trunk=(64, 128, 256, 512), tcn_blocks=5, head_hidden=256, out_dim=128,
            audio_layers=(3, 4, 6, 3), audio_widths=(16, 32, 64, 128), heads=8)
TINY = dict(trunk=(8, 16, 32, 64), tcn_blocks=1, head_hidden=32, out_dim=32,
            audio_layers=(1, 1, 1, 1), audio_widths=(8, 16, 32, 32), heads=4)


def build(stem_per_clip: bool = False, seed: int | None = 0, dims: dict | None = None):
    """The reference student as a ``torch.nn.Module``: ``Student(frames, mfcc)``."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    return _modules(torch).Student(stem_per_clip, dict(FULL, **(dims or {})))


def flax_overrides(dims: dict | None = None) -> dict:
    """``config.model`` fields (dotted) that give our Flax student the layout of
    ``build(dims=...)``: MFCC input, the real 3-D stem, two blocks per trunk stage."""
    d = dict(FULL, **(dims or {}))
    return {"visual.stem_width": d["trunk"][0], "visual.widths": tuple(d["trunk"]),
            "visual.blocks": 2, "visual.stem": "3d", "visual.tcn_blocks": d["tcn_blocks"],
            "visual.head_hidden": d["head_hidden"], "visual.out_dim": d["out_dim"],
            "audio.layers": tuple(d["audio_layers"]), "audio.widths": tuple(d["audio_widths"]),
            "audio_features": "mfcc", "fusion.dim": d["out_dim"], "fusion.heads": d["heads"],
            "fusion.ffn_mult": 4, "fusion.cross_attention_query": "target"}


_CACHE: dict = {}


def _modules(torch):
    """The module classes, defined once torch is imported (kept lazy on purpose)."""
    if "m" in _CACHE:
        return _CACHE["m"]
    nn = torch.nn
    F = torch.nn.functional

    def bn2(c, front=False):
        return nn.BatchNorm2d(c, momentum=0.01, eps=1e-3) if front else nn.BatchNorm2d(c)

    class FrontBlockPair(nn.Module):
        """Two deep_avsr residual blocks; the second's skip is the first's pre-BN sum."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.stride = stride
            self.conv1a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1a = bn2(cout, True)
            self.conv2a = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            # Created for every stage, used only when the stride is not 1 (stage 1's stays
            # unused - the converter lists it as such).
            self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.outbna = bn2(cout, True)
            self.conv1b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn1b = bn2(cout, True)
            self.conv2b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.outbnb = bn2(cout, True)

        def forward(self, x):
            skip = x if self.stride == 1 else self.downsample(x)
            s1 = self.conv2a(F.relu(self.bn1a(self.conv1a(x)))) + skip
            h = F.relu(self.outbna(s1))
            s2 = self.conv2b(F.relu(self.bn1b(self.conv1b(h)))) + s1
            return F.relu(self.outbnb(s2))

    class Trunk(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.layer1 = FrontBlockPair(w[0], w[0], 1)
            self.layer2 = FrontBlockPair(w[0], w[1], 2)
            self.layer3 = FrontBlockPair(w[1], w[2], 2)
            self.layer4 = FrontBlockPair(w[2], w[3], 2)

        def forward(self, x):                       # [N, 64, 28, 28] -> [N, 512]
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return x.mean(dim=(2, 3))               # == AvgPool(4) on the 4x4 map

    class VisualFrontend(nn.Module):
        def __init__(self, stem_per_clip, w):
            super().__init__()
            self.stem_per_clip = stem_per_clip
            self.width = w[-1]
            self.frontend3D = nn.Sequential(
                nn.Conv3d(1, w[0], (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
                nn.BatchNorm3d(w[0], momentum=0.01, eps=1e-3),
                nn.ReLU(),
                nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
            self.resnet = Trunk(w)

        def forward(self, x):                       # [B, T, H, W] normalised -> [B, T, 512]
            b, t, h, w = x.shape
            seq = x.reshape(b, 1, t, h, w) if self.stem_per_clip else x.reshape(1, 1, b * t, h, w)
            y = self.frontend3D(seq)                # [n, 64, frames, H/4, W/4]
            y = y.transpose(1, 2).reshape(b * t, y.shape[1], y.shape[-2], y.shape[-1])
            return self.resnet(y).reshape(b, t, self.width)

    class GLN(nn.Module):
        """Global layer norm over channels and time of [B, C, T]."""

        def __init__(self, c):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(1, c, 1))
            self.beta = nn.Parameter(torch.zeros(1, c, 1))

        def forward(self, x):
            mean = x.mean(dim=(1, 2), keepdim=True)
            var = ((x - mean) ** 2).mean(dim=(1, 2), keepdim=True)
            return self.gamma * (x - mean) / torch.sqrt(var + 1e-8) + self.beta

    class DSBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.net = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(c),
                                     nn.Conv1d(c, c, 3, 1, 1, groups=c, bias=False),
                                     nn.PReLU(), GLN(c), nn.Conv1d(c, c, 1, bias=False))

        def forward(self, x):
            return x + self.net(x)

    class Stack(nn.Module):
        def __init__(self, *mods):
            super().__init__()
            self.net = nn.Sequential(*mods)

        def forward(self, x):
            return self.net(x)

    class SE(nn.Module):
        def __init__(self, c, r=8):
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c),
                                    nn.Sigmoid())

        def forward(self, x):
            return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]

    class SEBlock(nn.Module):
        """conv -> ReLU -> BN -> conv -> BN -> SE, + shortcut, ReLU (on [N, C, F, T])."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.se = SE(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            h = self.se(self.bn2(self.conv2(self.bn1(F.relu(self.conv1(x))))))
            return F.relu(h + (x if self.downsample is None else self.downsample(x)))

    class AudioEncoder(nn.Module):
        def __init__(self, layers, widths):
            super().__init__()
            self.conv1 = nn.Conv2d(1, widths[0], 7, (2, 1), 3, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            cin = widths[0]
            for i, (n, c, s) in enumerate(zip(layers, widths, (1, 2, 2, 1))):
                blocks = [SEBlock(cin if j == 0 else c, c, s if j == 0 else 1) for j in range(n)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
                cin = c
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, mfcc):                    # [B, 4T, 13] -> [B, T, 128]
            x = mfcc.unsqueeze(1).transpose(2, 3)   # [B, 1, freq, time]
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return x.mean(dim=2).transpose(1, 2)

    class Attention(nn.Module):
        """Post-LN attention layer: LN(src + MHA(Q=tar, K=src, V=src)), then LN(x + FFN)."""

        def __init__(self, d, heads, dropout=0.1):
            super().__init__()
            self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
            self.linear1 = nn.Linear(d, 4 * d)
            self.linear2 = nn.Linear(4 * d, d)
            self.norm1 = nn.LayerNorm(d)
            self.norm2 = nn.LayerNorm(d)
            self.drop = nn.Dropout(dropout)

        def forward(self, src, tar):                # [B, T, D] each
            s, q = src.transpose(0, 1), tar.transpose(0, 1)
            h = self.self_attn(q, s, s, need_weights=False)[0]
            x = self.norm1(s + self.drop(h))
            h = self.linear2(self.drop(F.relu(self.linear1(x))))
            return self.norm2(x + self.drop(h)).transpose(0, 1)

    class TalkNetLayout(nn.Module):
        def __init__(self, stem_per_clip, d):
            super().__init__()
            c, hid, out, heads = d["trunk"][-1], d["head_hidden"], d["out_dim"], d["heads"]
            if d["audio_widths"][-1] != out:
                raise ValueError(f"audio width {d['audio_widths'][-1]} != visual out {out}")
            self.visualFrontend = VisualFrontend(stem_per_clip, d["trunk"])
            self.visualTCN = Stack(*[DSBlock(c) for _ in range(d["tcn_blocks"])])
            self.visualConv1D = Stack(nn.Conv1d(c, hid, 5, 1, 2), nn.BatchNorm1d(hid),
                                      nn.ReLU(), nn.Conv1d(hid, out, 1))
            self.audioEncoder = AudioEncoder(d["audio_layers"], d["audio_widths"])
            self.crossA2V = Attention(out, heads)
            self.crossV2A = Attention(out, heads)
            self.selfAV = Attention(2 * out, heads)

        def forward(self, frames, mfcc):
            x = (frames / 255.0 - MOUTH_MEAN) / MOUTH_STD
            v = self.visualFrontend(x).transpose(1, 2)              # [B, 512, T]
            v = self.visualConv1D(self.visualTCN(v)).transpose(1, 2)   # [B, T, 128]
            a = self.audioEncoder(mfcc)                             # [B, T, 128]
            if a.shape[1] != v.shape[1]:
                raise ValueError(f"audio gave {a.shape[1]} frames, video {v.shape[1]}")
            a2 = self.crossA2V(a, v)
            v2 = self.crossV2A(v, a)
            av = torch.cat([a2, v2], dim=2)
            return a2, v2, self.selfAV(av, av)

    class Head(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.FC = nn.Linear(d, 2)

    class UnusedProjections(nn.Module):
        def __init__(self):
            super().__init__()
            self.projection_A = nn.Linear(512, 256)
            self.projection_B = nn.Linear(128, 256)

    class Student(nn.Module):
        """frames [B, T, H, W] (0-255 float), mfcc [B, 4T, 13] -> dict(logits [B, T, 2],
        audio / visual [B, T, 128] after cross-attention)."""

        def __init__(self, stem_per_clip, dims):
            super().__init__()
            self.model = TalkNetLayout(stem_per_clip, dims)
            self.lossAV = Head(2 * dims["out_dim"])
            self.lossCont_Spea = UnusedProjections()

        def forward(self, frames, mfcc):
            a2, v2, av = self.model(frames, mfcc)
            return {"logits": self.lossAV.FC(av), "audio": a2, "visual": v2}

    def train_loss(out, labels, teacher_sim):
        """A training loss of the paper's kind (per-frame CE + BCE of the student's
        audio-visual similarity against a teacher target) - for timing; the cost of any
        loss is negligible next to the network's."""
        logits = out["logits"]
        ce = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
        sim = (F.cosine_similarity(out["audio"], out["visual"], dim=-1) + 1) / 2
        bce = F.binary_cross_entropy(sim.clamp(1e-6, 1 - 1e-6), teacher_sim)
        return ce + bce

    _CACHE["m"] = type("M", (), dict(Student=Student, train_loss=staticmethod(train_loss)))
    return _CACHE["m"]


def train_loss(out, labels, teacher_sim):
    """See ``_modules``' ``train_loss`` (torch must already be imported)."""
    import torch

    return _modules(torch).train_loss(out, labels, teacher_sim)


def count_parameters(module, prefix: str = "model.") -> int:
    """Number of parameters under ``prefix`` (running statistics excluded)."""
    return sum(math.prod(p.shape) for n, p in module.named_parameters() if n.startswith(prefix))


def randomise_bn_stats(module, seed: int = 0) -> None:
    """Draw every BatchNorm's running mean / variance at random (a parity test with the
    default 0 / 1 statistics would not notice a mean / variance mix-up)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
