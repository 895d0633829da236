"""Each batched op of pipelines/augment.py against the per-image PIL reference, on real images."""
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import augment as A
from pipelines import views as V
from pipelines.decode import decode_square
from tools.peer import pil_op

SIZE = 96


@pytest.fixture(scope="module")
def images(clothing_root):
    from pipelines.sources import clothing1m
    s = clothing1m.load("noisy_train", clothing_root)
    return torch.from_numpy(np.stack([decode_square(s.path(i), SIZE) for i in range(6)]))


@pytest.fixture(scope="module")
def gray_images(fmnist_train):
    return torch.from_numpy(fmnist_train.images[:6].copy())


def _ours(op, x, v):
    n = x.shape[0]
    vals = torch.full((n,), float(v), dtype=torch.float64)
    if op in V.GEOMETRIC:
        return A.warp_nearest(x, V.op_matrix(op, vals, x.shape[1]))
    if op in ("brightness", "color", "contrast", "sharpness"):
        vals = vals + 1
    return A.COLOUR_FNS[op](x, vals)


def _reference(op, x, v):
    outs = []
    for img in x.numpy():
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        out = np.asarray(pil_op(pil, op, v))
        outs.append(out[..., None] if out.ndim == 2 else out)
    return np.stack(outs)


CASES = [("autocontrast", 0), ("equalize", 0), ("solarize", 128), ("solarize", 170.0), ("posterize", 4),
         ("posterize", 6), ("color", 0.6), ("color", -0.6), ("contrast", 0.5), ("contrast", -0.6),
         ("brightness", 0.4), ("brightness", -0.5), ("sharpness", 0.8), ("sharpness", -0.8),
         ("rotate", 17.0), ("rotate", -30.0), ("shear_x", 0.25), ("shear_y", -0.3),
         ("translate_x", 20.0), ("translate_y", -13.0)]


@pytest.mark.parametrize("op,v", CASES)
@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_op_matches_pil(op, v, kind, images, gray_images):
    x = images if kind == "rgb" else gray_images
    ours = _ours(op, x, v).numpy()
    ref = _reference(op, x, v)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref.astype(int))
    if op in V.GEOMETRIC:
        # Nearest sampling at pixel centres, as PIL; PIL's fixed-point stepping may round a
        # boundary pixel the other way.
        assert (diff == 0).mean() > 0.995, (diff > 0).mean()
    elif op == "sharpness":
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    else:
        assert diff.max() == 0, (op, v, int(diff.max()), (diff > 0).mean())


def test_ops_change_images(images):
    # Guards against a test that cannot fail: every op at these magnitudes changes the pixels.
    for op, v in CASES:
        assert (_ours(op, images, v) != images).any(), op


def test_magnitudes_follow_torchvision():
    assert V.magnitude("rotate", 30, 224) == 30.0 and V.magnitude("rotate", 0, 224) == 0.0
    assert V.magnitude("posterize", 30, 224) == 4 and V.magnitude("posterize", 9, 224) == 7
    assert V.magnitude("solarize", 30, 224) == 0.0 and V.magnitude("solarize", 0, 224) == 255.0
    assert V.magnitude("translate_x", 30, 331) == 150.0
    assert abs(V.magnitude("shear_x", 15, 224) - 0.15) < 1e-9


def test_views_shapes_normalisation_and_independence(images):
    mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
    aug = A.Augmenter(V.lacol_views(80), mean, std, seed=0)
    weak, strong, strong2 = aug(images)
    for v in (weak, strong, strong2):
        assert v.shape == (6, 3, 80, 80) and v.dtype == torch.float32
        assert v.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(strong, strong2) and not torch.equal(weak, strong)
    # The weak view is a crop (+ flip) of the input: its values are exactly (x - mean) / std of
    # input pixels, so de-normalised values are integers 0..255.
    raw = weak * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(raw, raw.round(), atol=1e-3) and raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3
    # Same seed, same views; NCHW input gives the same result as NHWC.
    again = A.Augmenter(V.lacol_views(80), mean, std, seed=0)(images.permute(0, 3, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip((weak, strong, strong2), again))


def test_center_view_is_exact_crop(images):
    aug = A.Augmenter([V.eval_view(64)], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    (v,) = aug(images)
    o = (SIZE - 64) // 2
    assert torch.equal(v.permute(0, 2, 3, 1), images[:, o:o + 64, o:o + 64].float())


def test_pad_crop_and_flip(gray_images):
    spec = V.ViewSpec(28, crop="random", pad=4, flip=True)
    aug = A.Augmenter([spec], (0.0,), (1.0,), seed=1)
    outs = torch.stack([aug.view_uint8(gray_images, spec) for _ in range(20)])
    assert outs.shape == (20, 6, 28, 28, 1)
    assert (outs == 0).any() and (outs != gray_images).any()
    # Every output is a shifted (possibly flipped) copy of its image: its pixel multiset is a
    # sub-multiset of the padded image's.
    x = gray_images[0, ..., 0]
    for o in outs[:, 0, ..., 0]:
        found = any(torch.equal(o, torch.nn.functional.pad(x, (4, 4, 4, 4))[t:t + 28, l:l + 28].flip(1) if f
                                else torch.nn.functional.pad(x, (4, 4, 4, 4))[t:t + 28, l:l + 28])
                    for t in range(9) for l in range(9) for f in (0, 1))
        assert found


def test_rrc_and_cutout_run(images):
    spec = V.ViewSpec(64, crop="rrc", randaugment=True, cutout=0.25)
    (v,) = A.Augmenter([spec], (0, 0, 0), (1, 1, 1))(images)
    assert v.shape == (6, 3, 64, 64) and ((v == 127).all(1)).any()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        A.to_nhwc(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="channel dim"):
        A.to_nhwc(torch.zeros(2, 8, 8, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="magnitude"):
        V.ViewSpec(32, magnitude=31)


SPECS = {
    "strong": V.lacol_views(80)[1],
    "strong-pad-m20-3ops": V.ViewSpec(80, pad=8, randaugment=True, num_ops=3, magnitude=20),
    "rrc-strong-cutout": V.ViewSpec(64, "rrc", randaugment=True, cutout=0.3),
    "rrc": V.ViewSpec(64, "rrc"),
    "weak": V.lacol_views(80)[0],
    "center": V.eval_view(80),
}


@pytest.mark.parametrize("engine", ["numba", "batched"])
@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_every_engine_equals_the_torch_engine(name, kind, engine, images, gray_images):
    """The numba (CPU) and batched (GPU) engines apply the same plan with the same arithmetic:
    identical views, bit for bit, on a CPU."""
    if engine == "numba":
        pytest.importorskip("numba")
    spec = SPECS[name]
    x = images if kind == "rgb" else torch.nn.functional.interpolate(
        gray_images.permute(0, 3, 1, 2).float(), size=SIZE).round().to(torch.uint8).permute(0, 2, 3, 1)
    x = x.repeat(6, 1, 1, 1)  # 36 samples: every op is drawn
    mean, std = ((120.0, 110.0, 100.0), (60.0, 50.0, 70.0)) if kind == "rgb" else ((72.0,), (90.0,))
    before = x.clone()
    for seed in range(4):
        a = A.Augmenter([spec, spec], mean, std, seed=seed, engine="torch")(x)
        b = A.Augmenter([spec, spec], mean, std, seed=seed, engine=engine)(x)
        for u, v in zip(a, b):
            assert torch.equal(u, v), (name, kind, seed)
    assert torch.equal(x, before)  # neither engine writes into the caller's batch


def test_the_batched_engine_returns_the_training_dtype(images):
    views = V.lacol_views(64)
    f32 = A.Augmenter(views, (120.0,) * 3, (60.0,) * 3, seed=1, engine="batched")(images)
    b16 = A.Augmenter(views, (120.0,) * 3, (60.0,) * 3, seed=1, engine="batched", out_dtype=torch.bfloat16)(images)
    for a, b in zip(f32, b16):
        assert b.dtype == torch.bfloat16 and b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a.to(torch.bfloat16), b)  # normalised in fp32, then rounded once
