"""Network-level irregular graphs: multi-resolution fusion that no cell boundary splits.

Work after Serenity on "complex wired" networks (Zhong et al., ICCAD 2023, whose evaluation
includes such graphs) points out that divide-and-conquer at cell boundaries fails on networks
whose branches run in parallel across the whole network. Two such families:

* **HRNet** (Wang et al., "Deep High-Resolution Representation Learning", TPAMI 2020), the
  W18-small layout: a stem to 1/4 resolution, stage 1 with one bottleneck block, then stages 2-4
  with 2, 3 and 4 parallel branches (18, 36, 72, 144 channels) of two basic blocks each, every
  stage ending in an all-to-all fusion (1×1 conv + nearest up-sampling from lower resolutions,
  chains of stride-2 3×3 convs from higher ones, summed, ReLU). The HRNetV2 head up-samples all
  branches, concatenates them and mixes with a 1×1 conv before the classifier.
* **NAS-FPN** (Ghiasi, Lin, Le, CVPR 2019): the published merging-cell architecture over P3-P7
  (block specs as in the TensorFlow model garden's ``NASFPN_BLOCK_SPECS``: level, combine op,
  the two inputs, output flag), repeated 3 times with 64 channels on a small strided-conv
  backbone at 256×256. Each merging cell resamples its two inputs to its level (nearest
  up-sampling or max pooling), combines them by sum or global-pooling attention, then
  ReLU-Conv3×3-BN.
"""

from __future__ import annotations

import onnx

from serenity.zoo._onnx_builder import NetBuilder

HRNET_CHANNELS = (18, 36, 72, 144)

# Transcribed from the NAS-FPN paper's discovered architecture (TF model garden
# NASFPN_BLOCK_SPECS; published data): (level, combine, (input offset 0, input offset 1), output).
# Offsets index the feature list, which starts as [P3, P4, P5, P6, P7] and grows by one per block.
NASFPN_BLOCKS: tuple[tuple[int, str, tuple[int, int], bool], ...] = (
    (4, "attention", (1, 3), False),
    (4, "sum", (1, 5), False),
    (3, "sum", (0, 6), True),
    (4, "sum", (6, 7), True),
    (5, "attention", (7, 8), True),
    (7, "attention", (6, 9), True),
    (6, "attention", (9, 10), True),
)
NASFPN_REPEATS = 3
NASFPN_C = 64


def _basic_block(b: NetBuilder, x: str) -> str:
    c = b.channels(x)
    y = b.conv(b.relu(b.conv(x, c, 3)), c, 3)
    return b.relu(b.add(y, x))


def _fuse(b: NetBuilder, xs: list[str], n_out: int) -> list[str]:
    """HRNet's exchange unit: output ``i`` sums every input resampled to branch ``i``."""
    outs = []
    for i in range(n_out):
        with b.scope(f"fuse{i}"):
            c_i = HRNET_CHANNELS[i]
            hw = b.shape(xs[i])[2:]
            terms = []
            for j, x in enumerate(xs):
                if j == i:
                    terms.append(x)
                elif j > i:
                    terms.append(b.resize(b.conv(x, c_i, 1), (hw[0], hw[1])))
                else:
                    y = x
                    for step in range(i - j):
                        last = step == i - j - 1
                        y = b.conv(y, c_i if last else b.channels(x), 3, stride=2)
                        y = y if last else b.relu(y)
                    terms.append(y)
            outs.append(b.relu(b.sum(terms)) if len(terms) > 1 else terms[0])
    return outs


def _hrnet_stages(b: NetBuilder, branches: list[str]) -> list[str]:
    """Stages 2-4: parallel basic blocks per branch, fusion, and a new branch per transition."""
    for s, n in ((2, 2), (3, 3), (4, 4)):
        with b.scope(f"stage{s}"):
            for k in range(n):
                with b.scope(f"branch{k}"):
                    branches[k] = _basic_block(b, _basic_block(b, branches[k]))
            branches = _fuse(b, branches, n)
        if s < 4:
            with b.scope(f"transition{s}"):
                branches.append(b.relu(b.conv(branches[-1], HRNET_CHANNELS[s], 3, stride=2)))
    return branches


def hrnet_body(*, seed: int = 0) -> onnx.ModelProto:
    """HRNet-W18-small's multi-resolution body alone: stages 2-4 from the two branches that
    transition 1 makes (18@56×56, 36@28×28) to the four fused outputs.

    In the whole network the 112×112 stem holds the peak whatever the order; here the peak lies
    in the part no cell boundary splits.
    """
    b = NetBuilder("hrnet_w18_small_body", seed)
    branches = [
        b.input("branch0", (1, HRNET_CHANNELS[0], 56, 56)),
        b.input("branch1", (1, HRNET_CHANNELS[1], 28, 28)),
    ]
    outs = _hrnet_stages(b, branches)
    return b.finish(outs, doc="HRNet-W18-small stages 2-4 (serenity.zoo.multires)")


def hrnet(*, seed: int = 0) -> onnx.ModelProto:
    """HRNet-W18-small at 224×224: stages ``stage1..stage4``, 1000 classes."""
    b = NetBuilder("hrnet_w18_small", seed)
    x = b.input("image", (1, 3, 224, 224))
    with b.scope("stem"):
        x = b.relu(b.conv(b.relu(b.conv(x, 64, 3, stride=2)), 64, 3, stride=2))
    with b.scope("stage1"):
        y = b.conv(b.relu(b.conv(b.relu(b.conv(x, 32)), 32, 3)), 128)
        x = b.relu(b.add(y, b.conv(x, 128)))
    with b.scope("transition1"):
        branches = [
            b.relu(b.conv(x, HRNET_CHANNELS[0], 3)),
            b.relu(b.conv(x, HRNET_CHANNELS[1], 3, stride=2)),
        ]
    branches = _hrnet_stages(b, branches)
    with b.scope("head"):
        hw = b.shape(branches[0])[2:]
        up = [branches[0]] + [b.resize(x, (hw[0], hw[1])) for x in branches[1:]]
        mixed = b.relu(b.conv(b.concat(up), sum(HRNET_CHANNELS)))
        logits = b.classifier(mixed, 1000)
    return b.finish([logits], doc="HRNet-W18-small (serenity.zoo.multires)")


def _resample(b: NetBuilder, x: str, level: int, target: int) -> str:
    if level == target:
        return x
    if level > target:
        hw = 256 // 2**target
        return b.resize(x, (hw, hw))
    k = 2 ** (target - level)
    return b.maxpool(x, k, stride=k, pad=0)


def _merge(b: NetBuilder, feats: list[tuple[int, str]], spec: tuple[int, str, tuple[int, int], bool]) -> str:
    level, combine, (i0, i1), _ = spec
    (l0, x0), (l1, x1) = feats[i0], feats[i1]
    a, c = _resample(b, x0, l0, level), _resample(b, x1, l1, level)
    if combine == "sum":
        y = b.add(a, c)
    else:
        # Global-pooling attention: the coarser input's pooled sigmoid gates the finer one.
        fine, coarse = (a, c) if l0 <= l1 else (c, a)
        y = b.add(b.mul(fine, b.sigmoid(b.gap(coarse))), coarse)
    return b.conv(b.relu(y), NASFPN_C, 3)


def nasfpn(*, seed: int = 0) -> onnx.ModelProto:
    """NAS-FPN (3 repeats of 7 merging cells, ``cell0..cell2``) on a small backbone, 256×256."""
    b = NetBuilder("nasfpn", seed)
    x = b.input("image", (1, 3, 256, 256))
    levels: dict[int, str] = {}
    with b.scope("backbone"):
        for lvl, c in ((1, 32), (2, 64), (3, 128), (4, 256), (5, 256)):
            x = b.relu(b.conv(b.relu(b.conv(x, c, 3, stride=2)), c, 3))
            if lvl >= 3:
                levels[lvl] = b.conv(x, NASFPN_C)
        levels[6] = b.conv(x, NASFPN_C, 3, stride=2)
        levels[7] = b.maxpool(levels[6], 2, stride=2, pad=0)
    levels = _nasfpn_cells(b, levels)
    outs = [levels[lvl] for lvl in range(3, 8)]
    return b.finish(outs, doc="NAS-FPN over P3-P7 (serenity.zoo.multires)")


def nasfpn_body(*, seed: int = 0) -> onnx.ModelProto:
    """The NAS-FPN merging cells alone, reading P3-P7 (64 channels, 32×32 down to 2×2)."""
    b = NetBuilder("nasfpn_body", seed)
    levels = {lvl: b.input(f"P{lvl}", (1, NASFPN_C, 256 // 2**lvl, 256 // 2**lvl)) for lvl in range(3, 8)}
    levels = _nasfpn_cells(b, levels)
    return b.finish([levels[lvl] for lvl in range(3, 8)], doc="NAS-FPN merging cells (serenity.zoo.multires)")


def _nasfpn_cells(b: NetBuilder, levels: dict[int, str]) -> dict[int, str]:
    for r in range(NASFPN_REPEATS):
        with b.scope(f"cell{r}"):
            feats = [(lvl, levels[lvl]) for lvl in range(3, 8)]
            for k, spec in enumerate(NASFPN_BLOCKS):
                with b.scope(f"block{k}"):
                    feats.append((spec[0], _merge(b, feats, spec)))
            levels = {lvl: x for (lvl, x), spec in zip(feats[5:], NASFPN_BLOCKS, strict=True) if spec[3]}
    return levels
