"""pytest plugin (dev/gpu/serving_tests.sh): log where every model the tests load lands."""

from __future__ import annotations

import os
from typing import Any

import modeling.loading as _loading

_orig = _loading._from_pretrained
_LOG = os.path.join(os.environ.get("OUT", "/tmp"), "loads.log")


def _logged(path: Any, device: Any, dtype: Any) -> Any:
    model = _orig(path, device, dtype)
    p = next(model.parameters())
    with open(_LOG, "a") as f:
        f.write(f"{path} asked={device}/{dtype} got={p.device}/{p.dtype}\n")
    return model


_loading._from_pretrained = _logged
