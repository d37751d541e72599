"""Other step caches on the same model: never cache twice.

- ComfyUI's built-in EasyCache / LazyCache (transformer_options["easycache"], wrapper key "easycache"):
  a step cache on top of another one compounds their errors and both would skip the same steps. When
  one is already on the model, Forecast Cache is not applied (one warning); when one is added after
  Forecast Cache, the run-time check in the OUTER_SAMPLE wrapper steps aside (one warning per run).
- Forecast Cache applied twice on one path (two nodes in a row): the later node replaces the earlier
  one's hooks (one warning), so the settings a user sees on the last node are the ones that run.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger("DiTAccel")

OTHER_CACHE_KEYS = ("easycache",)  # ComfyUI's EasyCache and LazyCache share this key


def other_step_cache(model_options: dict, wrappers: dict | None = None) -> str | None:
    """Name of another step cache installed on a model (options and keyed wrappers), or None."""
    options = model_options.get("transformer_options", {}) if isinstance(model_options, dict) else {}
    for key in OTHER_CACHE_KEYS:
        if key in options:
            return type(options[key]).__name__.replace("Holder", "") or key
    for keyed in (wrappers or {}).values():
        for key in keyed:
            if key in OTHER_CACHE_KEYS:
                return key
    return None


def strip_previous(patched, wrapper_key: str, options_key: str, attention_key: str, ours: tuple) -> bool:
    """Remove an earlier Forecast Cache's hooks from a clone. Returns True when there were any.

    `ours`: (block_replacement function, TokenBlock class, record_cfg_branches function)."""
    options = patched.model_options.get("transformer_options", {})
    if options_key not in options:
        return False
    block_fn, token_block_cls, post_cfg_fn = ours
    for wrapper_type in list(patched.wrappers):
        patched.remove_wrappers_with_key(wrapper_type, wrapper_key)
    options.pop(options_key, None)
    dit = options.get("patches_replace", {}).get("dit", {})
    for key, fn in list(dit.items()):
        inner = _inner_of_ours(fn, block_fn, token_block_cls)
        if inner is _NOT_OURS:
            continue
        if inner is None:
            del dit[key]
        else:
            dit[key] = inner  # another pack's replacement we had chained: keep it
    override = options.get(attention_key)
    if getattr(override, "dit_accel", False):
        previous = getattr(override, "previous", None)
        if previous is None:
            options.pop(attention_key)
        else:
            options[attention_key] = previous
    post = patched.model_options.get("sampler_post_cfg_function")
    if isinstance(post, list):
        patched.model_options["sampler_post_cfg_function"] = [f for f in post if f is not post_cfg_fn]
    return True


_NOT_OURS = object()


def _inner_of_ours(fn, block_fn, token_block_cls):
    if isinstance(fn, functools.partial) and fn.func is block_fn:
        return fn.keywords.get("inner")
    if isinstance(fn, token_block_cls):
        return fn.inner
    return _NOT_OURS
