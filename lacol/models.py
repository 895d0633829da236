"""The networks only: encoders g with their classification head h (``fc``), the embedding head f,
and the batch norm that knows the three views of a concatenated batch apart.

Encoders follow torchvision's ResNet module names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``downsample.0``, ``fc``...), so a torchvision ``resnet50`` state dict loads into ``resnet50``
unchanged; ``tests/data/torchvision_resnet50_keys.json`` holds torchvision's keys and shapes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .text import first_line


class WeightsError(ValueError):
    """A weights file is missing or does not fit the model; the message names the file and key."""


class ViewBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d for a batch that concatenates views [weak; strong; strong2].

    ``mode``: ``mixed`` is plain batch norm over the whole batch; ``weak`` normalises with the
    whole batch's statistics but tracks running statistics on the first ``views_rows`` rows only
    (the weak view: the distribution evaluation sees); ``per_view`` normalises each view's block
    with its own statistics and tracks the weak block's. Outside a three-view forward
    (``views_rows`` None) it is plain batch norm.
    """

    mode: str = "mixed"
    views_rows: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.views_rows
        if not self.training or n is None or self.mode == "mixed":
            return super().forward(x)
        if self.mode == "weak":
            out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            self._track(x[:n])
            return out
        blocks = x.split(n)
        self._track(blocks[0])
        return torch.cat([F.batch_norm(b, None, None, self.weight, self.bias, True, 0.0, self.eps)
                          for b in blocks])

    @torch.no_grad()
    def _track(self, x: torch.Tensor) -> None:
        x = x.float()
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=True) if x.numel() > x.shape[1] else torch.zeros_like(mean)
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var, self.momentum)
        self.num_batches_tracked += 1


def set_views(model: nn.Module, rows: int | None, mode: str | None = None) -> None:
    """Tell every ViewBatchNorm2d how the next forward's batch is made (rows per view, None: one
    plain batch); ``mode`` also sets how the statistics are kept (``model.bn_stats``; the model
    is built with it)."""
    for m in model.modules():
        if isinstance(m, ViewBatchNorm2d):
            m.views_rows = rows
            if mode is not None:
                m.mode = mode


Norm = ViewBatchNorm2d


def conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), Norm(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """For 28 px data: conv-pool stages of width w, 2w, 4w, 8w, global average pool."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *conv_bn(in_channels, w), nn.MaxPool2d(2),
            *conv_bn(w, 2 * w), nn.MaxPool2d(2),
            *conv_bn(2 * w, 4 * w), nn.MaxPool2d(2, ceil_mode=True),
            *conv_bn(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = 8 * w
        self.fc = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = Norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = Norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = Norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = Norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = Norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), Norm(cout))


class ResNet(nn.Module):
    """ResNet with torchvision's module names. ``stem='imagenet'``: 7x7/2 conv + 3x3/2 max pool;
    ``stem='cifar'``: one 3x3/1 conv, no pool (32 px inputs)."""

    def __init__(self, block, layers: list[int], num_classes: int, in_channels: int = 3, stem: str = "imagenet"):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = Norm(64)
        self.relu = nn.ReLU(inplace=True)
        cin, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block's residual (torchvision's option)
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


ENCODERS = {
    "small_cnn": lambda c, ch, width: SmallCNN(c, ch, width),
    "resnet18": lambda c, ch, width: ResNet(BasicBlock, [2, 2, 2, 2], c, ch, stem="cifar"),
    "resnet34": lambda c, ch, width: ResNet(BasicBlock, [3, 4, 6, 3], c, ch, stem="cifar"),
    "resnet50": lambda c, ch, width: ResNet(Bottleneck, [3, 4, 6, 3], c, ch, stem="imagenet"),
}
"""``model.arch`` -> builder(num_classes, in_channels, width) of an encoder with ``features(x)
-> (B, num_features)``, ``num_features`` and its classification head ``fc``. Adding a model: its
module and one line here."""


def build_encoder(arch: str, num_classes: int, in_channels: int, width: int = 16) -> nn.Module:
    """An encoder with ``features(x) -> (B, num_features)`` and its classification head ``fc``."""
    if arch not in ENCODERS:
        raise ValueError(f"model.arch={arch!r}: choose one of {', '.join(ENCODERS)}")
    return ENCODERS[arch](num_classes, in_channels, width)


class Network(nn.Module):
    """Encoder g with classification head h (``encoder.fc``) and embedding head f (2-layer MLP,
    L2-normalised) on the encoder's features (``embed_from="features"``) or on the classifier's
    logits (``"logits"``). ``forward`` returns (logits, embeddings)."""

    def __init__(self, encoder: nn.Module, embed_dim: int = 128, embed_from: str = "features"):
        super().__init__()
        self.encoder, self.embed_from = encoder, embed_from
        d = encoder.num_features if embed_from == "features" else encoder.fc.out_features
        hidden = d if embed_from == "features" else embed_dim  # (features: as before; logits: C is narrow)
        self.embed = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor, embed: bool = True):
        h = self.encoder.features(x)
        logits = self.encoder.fc(h)
        if not embed:
            return logits, None
        return logits, F.normalize(self.embed(h if self.embed_from == "features" else logits).float(), dim=1)


def build_model(arch: str, num_classes: int, in_channels: int, width: int = 16, embed_dim: int = 128,
                pretrained: str | None = None, embed_from: str = "features", bn_stats: str = "weak") -> Network:
    """The network of ``model.*``; its batch norms keep running statistics as ``bn_stats`` says
    (``ViewBatchNorm2d``: weak | mixed | per_view)."""
    encoder = build_encoder(arch, num_classes, in_channels, width)
    if pretrained:
        load_encoder_weights(encoder, pretrained)
    net = Network(encoder, embed_dim, embed_from)
    set_views(net, None, bn_stats)
    return net


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load encoder weights (torchvision key names) from .pth/.pt or .safetensors. The
    classification head is skipped when its shape differs (another class count). Returns the
    skipped keys; any other mismatch is an error naming the key."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.pretrained={path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    except Exception as e:  # truncated, not a weights file, or holding objects weights_only refuses
        first = first_line(e)
        if "weights_only" in str(e):  # never suggest torch's own advice (weights_only=False runs code)
            first = "damaged, or holding pickled objects beyond tensors, which are not run"
        raise WeightsError(f"model.pretrained={path}: not a readable {path.suffix or 'weights'} file ({first}); "
                           f"download it again or point model.pretrained at a .pth or .safetensors of "
                           f"torchvision's key names") from None
    if not (isinstance(state, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())):
        raise WeightsError(f"model.pretrained={path}: holds {type(state).__name__}, not a dict of named tensors "
                           f"(a state_dict); save model.state_dict(), not the model")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = encoder.state_dict()
    skipped = [k for k in ("fc.weight", "fc.bias") if k in state and state[k].shape != own[k].shape]
    for k in skipped:
        del state[k]
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise WeightsError(f"model.pretrained={path}: does not fit the encoder "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad[:3]})")
    own.update(state)
    encoder.load_state_dict(own)
    return skipped
