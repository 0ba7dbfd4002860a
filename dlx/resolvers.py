"""OmegaConf resolvers used by the configs. Registered by the CLI before Hydra composes anything.

- `${mul:a,b,...}`: product, e.g. `in_features: ${mul:${.channels},${.size},${.size}}`.
- `${first:a,b,...}`: first argument that is not null, e.g. `size: ${first:${.image_size},28}`.
- `${if:cond,a,b}`: a when cond is true, else b, e.g. `num_classes: ${if:${oc.select:task.conditional,false},
  ${data.num_classes},0}` (a GAN's nets take the labels only when the task is conditional).
- `${uid:}`: a short id fixed for this process, so two runs started in the same second never share
  a folder, while one sweep's jobs share their sweep folder.
"""

import math
import secrets

from omegaconf import OmegaConf

_PROCESS_ID = secrets.token_hex(3)


def register() -> None:
    """Register the resolvers once (idempotent)."""
    if OmegaConf.has_resolver("mul"):
        return
    OmegaConf.register_new_resolver("mul", mul)
    OmegaConf.register_new_resolver("first", lambda *xs: next((x for x in xs if x is not None), None))
    OmegaConf.register_new_resolver("uid", lambda: _PROCESS_ID)
    OmegaConf.register_new_resolver("if", if_)


def mul(*xs: object) -> int | float:
    """Product of numbers; anything else is refused (Python would repeat a string: ${mul:abc,2} = 'abcabc')."""
    for x in xs:
        if not isinstance(x, int | float) or isinstance(x, bool):
            raise ValueError(f"mul takes numbers, got {x!r}")
    return math.prod(xs)


def if_(cond: object, a: object, b: object) -> object:
    """a if cond else b; cond must be a boolean (a string 'false' would be true in Python)."""
    if not isinstance(cond, bool):
        raise ValueError(f"if takes true or false first, got {cond!r}")
    return a if cond else b
