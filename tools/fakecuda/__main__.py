"""The fake-CUDA process: ``python -m tools.fakecuda --lib LIB SCENARIO[:PLANT]...`` prints one
JSON line {spec: {"events", "error", "checked", "ops"}} (see __init__); ``SCENARIO:PLANT`` runs
the scenario with that defect planted (``scenarios.PLANTS``)."""
import argparse
import ctypes
import json
import sys
import traceback

p = argparse.ArgumentParser()
p.add_argument("--lib", required=True)
p.add_argument("scenarios", nargs="+")
a = p.parse_args()
ctypes.CDLL(a.lib, mode=ctypes.RTLD_GLOBAL)  # before torch: its CUDA hooks are read once

import torch  # noqa: E402
import torch.amp.autocast_mode  # noqa: E402
import torch.cuda.amp.common  # noqa: E402
import torch.utils.data._utils.worker as _worker  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from tools.fakecuda.recorder import Recorder  # noqa: E402
from tools.fakecuda.scenarios import PLANTS, SCENARIOS  # noqa: E402

# Python-side checks that would refuse a CPU-only build before the C++ side is reached
torch.cuda._lazy_init = lambda: None
torch.cuda.amp.common.amp_definitely_not_available = lambda: False
torch.amp.autocast_mode.is_autocast_available = lambda device_type: True
torch.cuda.is_bf16_supported = lambda including_emulation=True: True
_loop = _worker._worker_loop


def _worker_loop(*args, **kwargs):  # a forked DataLoader worker runs on the host: no modes there
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack, _pop_mode

    while _get_current_dispatch_mode_stack():
        _pop_mode()
    return _loop(*args, **kwargs)


_worker._worker_loop = _worker_loop


class _Patch:
    def __init__(self):
        self.undo = []

    def __call__(self, obj, name, value):
        self.undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def close(self):
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)


results = {}
for spec in a.scenarios:
    name, _, plant = spec.partition(":")
    patch = _Patch()
    if plant:
        PLANTS[plant](patch)
    rec = Recorder()
    checked, error = None, None
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), rec:
            checked = SCENARIOS[name](rec)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"[:600] + "\n" + "".join(traceback.format_tb(e.__traceback__)[-4:])[-1500:]
    finally:
        patch.close()
    results[spec] = {"events": rec.events, "error": error, "checked": checked, "ops": rec.ops}
print(json.dumps(results))
sys.stdout.flush()
