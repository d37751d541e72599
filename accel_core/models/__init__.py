"""Model specs; importing registers every family."""
from __future__ import annotations

from . import flux, hunyuan_video, qwen_image  # noqa: F401  (registration side effects)
from .registry import MODEL_SPECS
from .spec import IMG_TXT, TXT_IMG, BlockGroup, ModelSpec


def spec_for_class(class_name: str) -> ModelSpec | None:
    """The spec whose host classes include `class_name`, or None (unsupported model)."""
    for name in MODEL_SPECS.names():
        spec = MODEL_SPECS.get(name)
        if class_name in spec.host_classes:
            return spec
    return None


__all__ = ["MODEL_SPECS", "IMG_TXT", "TXT_IMG", "BlockGroup", "ModelSpec", "spec_for_class"]
