"""Controls: chain-like networks where the operator order barely matters.

* **ResNet-18** (He et al. 2016) at 224×224: eight basic blocks; the only choice a scheduler has
  is when to run a block's 1×1 down-sampling shortcut.
* **MobileNetV2** (Sandler et al. 2018) at 224×224, width 1.0: the published
  ``(t, c, n, s)`` table of inverted residual blocks; a pure chain apart from the residual adds.

Both are emitted in PyTorch ``forward`` order with batch norms folded into the convolutions.
"""

from __future__ import annotations

import onnx

from serenity.zoo._onnx_builder import NetBuilder

# MobileNetV2's inverted-residual settings (expansion t, channels c, repeats n, first stride s),
# Table 2 of Sandler et al. 2018 (published data).
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


def resnet18(*, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18, blocks in scopes ``block0..block7``."""
    b = NetBuilder("resnet18", seed)
    x = b.input("image", (1, 3, 224, 224))
    with b.scope("stem"):
        x = b.maxpool(b.relu(b.conv(x, 64, 7, stride=2)), 3, stride=2)
    k = 0
    for c, first_stride in RESNET18_STAGES:
        for i in range(2):
            stride = first_stride if i == 0 else 1
            with b.scope(f"block{k}"):
                y = b.conv(b.relu(b.conv(x, c, 3, stride=stride)), c, 3)
                shortcut = b.conv(x, c, 1, stride=stride) if stride != 1 or b.channels(x) != c else x
                x = b.relu(b.add(y, shortcut))
            k += 1
    with b.scope("head"):
        logits = b.classifier(x, 1000)
    return b.finish([logits], doc="ResNet-18 (serenity.zoo.controls)")


def mobilenet_v2(*, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 1.0, inverted residual blocks in scopes ``block0..block16``."""
    b = NetBuilder("mobilenet_v2", seed)
    x = b.input("image", (1, 3, 224, 224))
    with b.scope("stem"):
        x = b.clip6(b.conv(x, 32, 3, stride=2))
    k = 0
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            with b.scope(f"block{k}"):
                cin = b.channels(x)
                y = b.clip6(b.conv(x, cin * t)) if t != 1 else x
                y = b.conv(b.clip6(b.dwconv(y, 3, stride=stride)), c)
                x = b.add(y, x) if stride == 1 and cin == c else y
            k += 1
    with b.scope("head"):
        logits = b.classifier(b.clip6(b.conv(x, 1280)), 1000)
    return b.finish([logits], doc="MobileNetV2 1.0 (serenity.zoo.controls)")
