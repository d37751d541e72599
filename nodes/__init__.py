"""DiT Accel nodes: the only package that imports ComfyUI."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .calibrate_node import CALIBRATION_NODES
from .compare_node import DiTAccelCompare
from .forecast_node import DiTAccelForecastCache
from .option_nodes import OPTION_NODES
from .resolution_node import DiTAccelProgressiveResolution
from .token_nodes import TOKEN_NODES

NODE_LIST: list[type[io.ComfyNode]] = [DiTAccelForecastCache, DiTAccelCompare, *OPTION_NODES, *TOKEN_NODES,
                                       *CALIBRATION_NODES, DiTAccelProgressiveResolution]


class DiTAccelExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_LIST)


async def comfy_entrypoint() -> DiTAccelExtension:
    return DiTAccelExtension()
