"""Values that used to train silently to NaN or to something else than asked (issue 25, items 5
and 13) are refused at load time, naming the key and the allowed range."""
import pytest

from lacol.config import ConfigError, load_config

RECIPE = "configs/fashion_mnist.yaml"


@pytest.mark.parametrize("overrides,says", [
    (["loss.rho=2"], "loss.rho=2.0: must be in (0, 1]"),
    (["loss.rho=0"], "loss.rho=0.0: must be in (0, 1]"),
    (["loss.tau=1e-45"], "loss.tau=1e-45: must be >= 0.001"),
    (["optim.momentum=5"], "optim.momentum=5.0: must be in [0, 1)"),
    (["optim.momentum=0", "optim.nesterov=true"], "optim.nesterov=true needs optim.momentum > 0"),
    (["optim.gamma=-1"], "optim.gamma=-1.0: must be > 0"),
    (["data.cutout=3.0"], "data.cutout=3.0: a fraction"),
    (["data.cutout=-1"], "data.cutout=-1.0: a fraction"),
    (["data.magnitude=1000"], "data.magnitude=1000: a RandAugment bin, 0..30"),
    (["data.num_ops=99"], "data.num_ops=99: 0.."),
    (["loss.num_negatives=100000"], "loss.num_negatives=100000: at most 4096"),
    (["train.seed=-1"], "train.seed=-1: seeds are >= 0"),
    (["data.noise_seed=-2"], "data.noise_seed=-2: seeds are >= 0"),
    (["optim.milestones=[2.5, 3]"], "optim.milestones=[2.5, 3]: expected whole numbers"),
    (["optim.milestones=[2, true]"], "optim.milestones=[2, True]: expected whole numbers"),
])
def test_refused_with_the_key_and_the_range(overrides, says):
    with pytest.raises(ConfigError) as e:
        load_config(RECIPE, overrides)
    assert says in str(e.value)


def test_the_recipes_and_the_papers_values_still_load():
    for name in ("fashion_mnist", "fashion_mnist_resnet18", "cifar10", "cifar100", "clothing1m"):
        load_config(f"configs/{name}.yaml")
    cfg = load_config(RECIPE, ["loss.rho=1", "loss.tau=0.2", "optim.momentum=0", "data.cutout=1", "data.magnitude=30",
                               "loss.num_negatives=4096", "optim.milestones=[5, 10]"])
    assert cfg.optim.milestones == [5, 10]
