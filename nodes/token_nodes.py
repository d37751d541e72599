"""Token nodes (category DiT Accel/tokens): each outputs a DITACCEL_TOKENS socket for Forecast
Cache's 'tokens' input. Forecast steps then become partial steps: a subset of the image tokens runs
through the model, the rest keep the forecast (see accel_core/tokens)."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from accel_core.tokens.edit_discovery import THRESHOLD_RULES
from accel_core.tokens.mask import prepare_mask
from accel_core.tokens.settings import KV_MODES, LOCKS, TokenSettings

TokenOptions = io.Custom("DITACCEL_TOKENS")
log = logging.getLogger("DiTAccel")

KV_HELP = ("How the computed tokens see the others in attention. cached (recommended): the other tokens' keys / "
           "values from the newest two full steps, extrapolated to the current step. Memory: keys + values of every "
           "token in every block, kept for two full steps: about 6.5 GB per image and CFG branch for FLUX 1024px "
           "in bf16 (13 GB at cfg > 1). drop: only each other and the text (DaTo's pruning; less attention work, "
           "same memory, lower fidelity in our measurements).")


def _kv_input(default: str = "cached"):
    return io.Combo.Input("attention_context", options=list(KV_MODES), default=default, tooltip=KV_HELP)


PARTIAL_FROM_DEFAULT = 0.5  # chosen on the tune models (docs/TOKENS.md, round 5)


def _partial_from_input(measured: str):
    # optional: API prompts saved before the input existed still validate (they get the default)
    return io.Float.Input(
        "partial_from", default=PARTIAL_FROM_DEFAULT, min=0.0, max=0.95, step=0.05, optional=True,
        tooltip="Which forecast steps become partial, as a share of the gap between two full steps (0-0.95). "
        "0: every forecast step. 0.5 (default): the later half of each gap, where the forecast has drifted "
        "most; the earlier steps keep the plain forecast and cost nothing extra. " + measured)


class DiTAccelClusterTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelClusterTokens",
            display_name="Cluster Tokens (ClusCa, experimental)",
            category="DiT Accel/tokens",
            description=(
                "Between full steps, computes a few tokens of every cluster of similar image tokens and "
                "corrects the rest of their cluster by how far the forecast was off there (ClusCa). Clusters: "
                "K-means on a block's features at every full step. Connect to Forecast Cache's 'tokens' input "
                "(output cache). Cost per partial step: clusters x tokens_per_cluster image tokens. "
                "EXPERIMENTAL: at 4096 tokens (zoo models flux_4k_* and hv_4k_*, 50 steps, defaults: propagation "
                "measured, later half of each gap, scaled weights) it added -0.1 to +0.9 dB to Forecast Cache "
                "alone at the same full steps on the tune models and -0.2 to +2.3 dB on the validate models, for "
                "1.14-1.33x the forecast's wall time on these micro models (a partial step's host work outside "
                "the blocks; FLUX-size token work 1.02x). At equal wall time it has not beaten the forecast "
                "alone at a denser share (docs/TOKENS.md, round 5). Check with the A/B workflow."
            ),
            inputs=[
                io.Int.Input("clusters", default=16, min=2, max=256, step=1,
                             tooltip="Number of token clusters K (unit: clusters). Recommended 8-32 (ClusCa: 16 "
                             "for FLUX, 32 for HunyuanVideo)."),
                io.Int.Input("tokens_per_cluster", default=2, min=1, max=64, step=1,
                             tooltip="Image tokens computed per cluster on each partial step. 2 or more lets the "
                             "pack measure how much of a cluster's error carries over (with 1 nothing is "
                             "propagated). Recommended 2-4."),
                io.Float.Input("cluster_layer", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Which block's features are clustered, as a fraction of the model's depth "
                               "(0 = first block, 1 = last). Recommended 0.3-0.7 (ClusCa: the last double block, "
                               "about 0.33 of FLUX)."),
                _kv_input(),
                io.Combo.Input("propagation", options=["off", "measured"], default="measured", optional=True,
                               tooltip="measured: the rest of each cluster also gets the forecast error seen at its "
                               "fresh tokens, times a gain measured on your model at every full step (ClusCa's "
                               "propagation). off: only the fresh tokens change. Default measured since issue 19: at "
                               "1024 image tokens it gained 1.6-3.0 dB over 'off' on the tune model flux_1k_tune "
                               "and 0.8-2.3 dB on the validate model flux_1k_validate (1/5 and 1/7); on small latents "
                               "(64-768 tokens) it lost 0.5-0.9 dB on the round-3 tune models, so use 'off' there. "
                               "Agreed over ranks under sequence parallelism (same result as one GPU)."),
                _partial_from_input("On the tune models at 4096 tokens (flux_4k_tune, hv_4k_tune; 1/5 and 1/7) "
                                    "the later half kept the propagation's gain within 0.1-0.5 dB for half the "
                                    "partial steps, and lost less where propagation lost; on the validate models "
                                    "it kept the gain within 0.0-0.4 dB."),
                io.Combo.Input("gap_weighting", options=["scaled", "flat"], default="scaled", optional=True,
                               tooltip="How the trust in fresh tokens and the propagation gain, both measured at "
                               "the end of a gap (at full steps), apply earlier in the gap. scaled (default): "
                               "smaller where the forecast has drifted less (the forecast error grows with the "
                               "horizon, the fresh tokens' own error does not), so the weight at a share s of "
                               "the gap is w s^2 / (w s^2 + 1 - w). flat: the gap-end value everywhere. On the tune "
                               "models scaled turned the worst loss of propagation at 1/7 from -1.0 dB into -0.1; on "
                               "the validate models it gave up part of the gain at 1/7 (flux_4k_validate: +2.3 dB "
                               "over the forecast alone instead of +3.3). Try flat if your A/B check prefers it."),
            ],
            outputs=[TokenOptions.Output(display_name="tokens")],
        )

    @classmethod
    def execute(cls, clusters: int, tokens_per_cluster: int, cluster_layer: float,
                attention_context: str, propagation: str = "measured", partial_from: float = PARTIAL_FROM_DEFAULT,
                gap_weighting: str = "scaled") -> io.NodeOutput:
        settings = TokenSettings(method="clusters", clusters=clusters, per_cluster=tokens_per_cluster,
                                 cluster_block=cluster_layer, kv=attention_context,
                                 propagate=propagation == "measured", partial_from=partial_from,
                                 trust_horizon=gap_weighting)
        return io.NodeOutput({"settings": settings, "mask": None})


class DiTAccelEditRegion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelEditRegion",
            display_name="Edit Region (EEdit, experimental)",
            category="DiT Accel/tokens",
            description=(
                "For edits (Kontext, Qwen-Image-Edit, inpainting-style FLUX work): between full steps only the "
                "tokens inside the MASK and a few rings around it are computed; the rest of the image keeps the "
                "forecast. Reference-image tokens are never recomputed. Draw the mask in ComfyUI's mask editor or "
                "use a Load Image alpha. Connect to Forecast Cache's 'tokens' input. EXPERIMENTAL: at 1024 target "
                "+ 1024 reference tokens (zoo validate model kontext_1k_validate, 50 steps) it raised the edited "
                "area's fidelity (rings 2 + Forecast Cache 1/4, later half of each gap: 48.2 dB inside, 43.8 "
                "outside, against 43.3 / 43.5 for the forecast alone) at 1.3-1.5x the forecast's wall time: it "
                "buys fidelity inside the edit, not speed (docs/TOKENS.md, round 5)."
            ),
            inputs=[
                io.Mask.Input("mask", tooltip="Edit region (white = edited). Any size, [H, W], [B, H, W] or "
                              "[B, 1, H, W]: it is resampled to the model's token grid; a token is inside when any "
                              "of it is masked. Several masks are joined and used for every sample. Empty or "
                              "non-finite masks are refused; an all-black one computes nothing (said once)."),
                io.Int.Input("rings", default=2, min=0, max=16, step=1,
                             tooltip="Token rings around the mask also computed (1 token = 16 px for FLUX / "
                             "Qwen-Image). Recommended 1-3: edits bleed a little past the mask."),
                io.Float.Input("ring_decay", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="Blend weight of ring i = ring_decay^i between its fresh value and the "
                               "forecast (EEdit's cascade). 1 = rings fully fresh. Recommended 0.6-1."),
                _kv_input(),
                _partial_from_input("On the tune edit model kontext_1k_tune (rings 2, Forecast Cache 1/4 and 1/5) "
                                    "the later half ran 1.2x faster than every step for -0.1 dB over the image "
                                    "and -0.6 inside the edit."),
            ],
            outputs=[TokenOptions.Output(display_name="tokens")],
        )

    @classmethod
    def execute(cls, mask, rings: int, ring_decay: float, attention_context: str,
                partial_from: float = PARTIAL_FROM_DEFAULT) -> io.NodeOutput:
        settings = TokenSettings(method="region", rings=rings, ring_decay=ring_decay, kv=attention_context,
                                 partial_from=partial_from)
        prepared, note = prepare_mask(mask)  # refuses empty / non-finite / other shapes
        if note:
            log.warning("DiT Accel: %s", note)
        return io.NodeOutput({"settings": settings, "mask": prepared})


class DiTAccelDynamicTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelDynamicTokens",
            display_name="Dynamic Tokens (DaTo, experimental)",
            category="DiT Accel/tokens",
            description=(
                "Between full steps, computes the image tokens whose output changed most between the last two "
                "full steps (DaTo's dynamics score, ported to DiTs); the static rest keep the forecast. Connect "
                "to Forecast Cache's 'tokens' input."
            ),
            inputs=[
                io.Float.Input("keep", default=0.1, min=0.01, max=0.9, step=0.01,
                               tooltip="Share of the image tokens computed on each partial step (0-1). Recommended "
                               "0.05-0.25; work per partial step grows with it."),
                _kv_input(),
            ],
            outputs=[TokenOptions.Output(display_name="tokens")],
        )

    @classmethod
    def execute(cls, keep: float, attention_context: str) -> io.NodeOutput:
        settings = TokenSettings(method="dynamics", keep=keep, kv=attention_context)
        return io.NodeOutput({"settings": settings, "mask": None})


class DiTAccelSpecEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelSpecEdit",
            display_name="Spec Edit (auto region, experimental)",
            category="DiT Accel/tokens",
            description=(
                "For edit models (Kontext, Qwen-Image-Edit with a ReferenceLatent), no mask needed: the first full "
                "step's x0 estimate is the draft of the edit, and the tokens where it differs from the reference "
                "image (threshold relative to the measured differences) plus a few rings are the edit region. "
                "Between full steps only those are computed; the rest are locked (to the forecast or to the "
                "input). Reference tokens are never recomputed. Connect to Forecast Cache's 'tokens' input. "
                "Models without a reference latent: one warning, Forecast Cache alone. EXPERIMENTAL: at 1024 "
                "target + 1024 reference tokens (zoo validate model kontext_1k_validate, 50 steps) rings 0 + "
                "Forecast Cache 1/4 kept 43.5 dB outside the edit and 45.8 inside at 3.3x less token work, where "
                "the forecast alone at 1/4 gave 43.5 / 43.3 at 3.85x: it buys fidelity inside the edit, not "
                "speed (docs/SPECEDIT.md)."
            ),
            inputs=[
                io.Int.Input("rings", default=0, min=0, max=16, step=1,
                             tooltip="Token rings around the marked tokens also computed (1 token = 16 px for "
                             "FLUX / Qwen-Image). Recommended 0-1: on our tune edit model each ring cost more "
                             "work than it bought back in fidelity (the forecast covers the margin well)."),
                io.Combo.Input("lock", options=list(LOCKS), default="forecast",
                               tooltip="What the unmarked tokens take between full steps. forecast: the output "
                               "cache's forecast (recommended). input: the reference image's x0 (no model call; "
                               "exact only where the model copies the input exactly: on our tune edit model it "
                               "lost 11-16 dB). Full steps compute every token."),
                io.Combo.Input("threshold", options=list(THRESHOLD_RULES), default="otsu",
                               tooltip="How the draft-vs-input difference marks tokens, relative to its own "
                               "distribution. otsu (recommended): Otsu's split of the differences. max_share: at "
                               "least 'share' of the largest difference."),
                io.Float.Input("share", default=0.25, min=0.01, max=1.0, step=0.01,
                               tooltip="Only for threshold max_share: marked where the difference is at least this "
                               "share of its maximum (0-1). Recommended 0.1-0.5; lower marks more tokens."),
                io.Int.Input("draft_steps", default=1, min=1, max=10, step=1,
                             tooltip="How many of the first full steps (which Forecast Cache computes anyway) mark "
                             "the region; their marks are joined. Recommended 1-3."),
                _kv_input(),
                _partial_from_input("On the tune edit model kontext_1k_tune (rings 0, Forecast Cache 1/4 and 1/5) "
                                    "the later half ran 1.1-1.2x faster than every step for -0.0 to -0.1 dB."),
            ],
            outputs=[TokenOptions.Output(display_name="tokens")],
        )

    @classmethod
    def execute(cls, rings: int, lock: str, threshold: str, share: float, draft_steps: int,
                attention_context: str, partial_from: float = PARTIAL_FROM_DEFAULT) -> io.NodeOutput:
        settings = TokenSettings(method="specedit", rings=rings, ring_decay=1.0, lock=lock, threshold=threshold,
                                 share=share, draft_steps=draft_steps, kv=attention_context,
                                 partial_from=partial_from)
        return io.NodeOutput({"settings": settings, "mask": None})


# Dynamic Tokens is not registered: on the tune models it never beat the forecast alone at the same
# work (bench/results/tokens_tune.json), and the issue ships DaTo only where it does. The class stays
# for the bench and for a later port that does.
TOKEN_NODES = [DiTAccelClusterTokens, DiTAccelEditRegion, DiTAccelSpecEdit]
