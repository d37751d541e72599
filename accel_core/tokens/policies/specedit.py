"""Spec Edit (see edit_discovery.py): the region of Edit Region, marked without a mask from the
discrepancy between the draft (the guided x0 estimate of the first full steps) and the reference latent
of an edit model; the unmarked tokens are locked to the forecast or to the input."""
from __future__ import annotations

import torch

from ..edit_discovery import discrepancy, mark_batch, reference_at
from ..patches import patchify
from .registry import TOKEN_POLICIES
from .region import RegionPolicy


@TOKEN_POLICIES.register("specedit")
class SpecEditPolicy(RegionPolicy):
    wants_reference = True

    def __init__(self, settings) -> None:
        super().__init__(settings)
        # The reference latent of the newest full call (model space, set by the host's DIFFUSION_MODEL
        # wrapper), the marked edit tokens and the drafts seen so far.
        self.reference: torch.Tensor | None = None
        self.latent_spatial: tuple[int, ...] = ()  # (T,) H, W of the target latent (set with the reference)
        self.reference_resized = False
        self.marked: torch.Tensor | None = None
        self.drafts = 0

    def set_reference(self, reference: torch.Tensor, latent_spatial: tuple[int, ...]) -> None:
        self.reference = reference
        self.latent_spatial = latent_spatial

    def reference_rows(self, batch: int, patch) -> torch.Tensor:
        """The reference latent as token rows [batch, N, P] of the target latent in sampling."""
        shape = (batch, self.reference.shape[1]) + tuple(self.latent_spatial)
        ref, self.reference_resized = reference_at(self.reference, shape)
        return patchify(ref.float(), patch)

    def after_full(self, run, out_rows: torch.Tensor) -> None:
        self.draft(run, out_rows)

    def draft(self, run, out_rows: torch.Tensor) -> None:
        """At a full step: the guided x0 estimate [B, N, P] is the draft of the edit; tokens whose draft
        differs from the reference (relative threshold, union over the draft steps) are marked. No
        reference latent: not an edit model, token work off (one warning)."""
        if self.drafts >= self.settings.draft_steps or run.disabled:
            return
        if self.reference is None:
            run.disable("SpecEdit found no reference latent: not an edit model (Kontext / Qwen-Image-Edit with a "
                        "ReferenceLatent); use Edit Region with a mask for other models")
            return
        score = discrepancy(out_rows, self.reference_rows(out_rows.shape[0], run.patch).to(out_rows.device))
        marked = mark_batch(score, self.settings.threshold, self.settings.share).cpu()
        self.marked = marked if self.marked is None or self.marked.numel() != marked.numel() else self.marked | marked
        self.drafts += 1
        self.rings = None  # region rows follow the marks

    def coverage(self, run, n_target: int, grid: tuple[int, ...]) -> torch.Tensor | None:
        if self.marked is None or self.marked.numel() != n_target:
            return None
        return self.marked.float()

    def ready(self, run) -> bool:
        return self.marked is not None

    def base_rows(self, run, forecast_rows: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.settings.lock != "input":
            return forecast_rows.float()
        # Locked tokens take the reference's x0: the sampler's step moves them toward the input.
        base = self.reference_rows(forecast_rows.shape[0], run.patch).to(forecast_rows.device).clone()
        base[:, rows] = forecast_rows[:, rows].float()
        return base

    def needs_rows(self) -> bool:
        return self.settings.lock == "input"

    def label(self, run) -> str:
        """What it marked, computed and locked."""
        s = self.settings
        if self.marked is None:
            return s.method
        computed = int((self.rings >= 0).sum()) if self.rings is not None else int(self.marked.sum())
        note = ", reference resized" if self.reference_resized else ""
        rings = f"{s.rings} ring" + ("" if s.rings == 1 else "s")
        return (f"specedit ({int(self.marked.sum())} of {self.marked.numel()} tokens marked, {computed} computed "
                f"with {rings}, rest locked to the {s.lock}{note})")

    def reset(self) -> None:
        super().reset()
        self.marked = None
        self.drafts = 0

    def close(self) -> None:
        self.reference = None
