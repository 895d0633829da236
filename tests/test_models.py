"""Encoders: torchvision's ResNet-50 key names and shapes, weight loading, the three-view batch norm."""
import json
from pathlib import Path

import pytest
import torch

from lacol.losses import select
from lacol.models import ViewBatchNorm2d, build_encoder, build_model, load_encoder_weights, set_views

KEYS = Path(__file__).parent / "data" / "torchvision_resnet50_keys.json"


def test_resnet50_state_dict_matches_torchvision_key_for_key():
    expected = json.loads(KEYS.read_text())["keys"]
    own = [[k, list(v.shape)] for k, v in build_encoder("resnet50", 1000, 3).state_dict().items()]
    assert own == expected


def test_pretrained_weights_load_from_safetensors_and_pth_and_skip_the_head(tmp_path):
    from safetensors.torch import save_file

    src = build_encoder("resnet50", 1000, 3)
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in src.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        model = build_model("resnet50", 14, 3, pretrained=str(tmp_path / f))
        got = model.encoder.state_dict()
        assert torch.equal(got["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
        assert got["fc.weight"].shape == (14, 2048)  # new head for 14 classes
    bad = {k: v for k, v in state.items() if k != "layer1.0.bn1.weight"}
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="layer1.0.bn1.weight"):
        load_encoder_weights(build_encoder("resnet50", 14, 3), tmp_path / "bad.safetensors")


@pytest.mark.parametrize("arch,channels,size", [("small_cnn", 1, 28), ("resnet18", 3, 32), ("resnet34", 3, 32)])
def test_forward_shapes_and_unit_embeddings(arch, channels, size):
    model = build_model(arch, 10, channels, embed_dim=128).to(memory_format=torch.channels_last)
    x = torch.randn(6, channels, size, size).contiguous(memory_format=torch.channels_last)
    logits, z = model(x)
    assert logits.shape == (6, 10) and z.shape == (6, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(6), atol=1e-5)


def test_view_batch_norm_tracks_the_weak_block_only():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(8, 3, 4, 4), torch.randn(16, 3, 4, 4) * 5 + 3])
    plain, weak = torch.nn.BatchNorm2d(3, momentum=1.0), ViewBatchNorm2d(3, momentum=1.0)
    set_views(weak, 8, "weak")
    assert torch.allclose(weak(x), plain(x), atol=1e-5)  # normalised with the whole batch
    assert torch.allclose(weak.running_mean, x[:8].mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(weak.running_var, x[:8].var((0, 2, 3)), atol=1e-5)
    per = ViewBatchNorm2d(3, momentum=1.0)
    set_views(per, 8, "per_view")
    out = per(x)
    assert torch.allclose(out[8:16].mean((0, 2, 3)), torch.zeros(3), atol=1e-5)  # each block on its own


def test_class_floor_revives_a_class_the_model_never_predicts():
    # class 2 is never the argmax; the floor selects the most confident half of its samples
    p = torch.tensor([[0.6, 0.1, 0.3], [0.5, 0.1, 0.4], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]])
    y = torch.tensor([2, 2, 2, 1, 0])
    assert select(p, y).tolist() == [False, False, False, True, True]
    # ceil(0.5 * 3) = 2 of class 2: p[:, 2] = 0.3, 0.4, 0.1, so the first two
    assert select(p, y, class_floor=0.5).tolist() == [True, True, False, True, True]
