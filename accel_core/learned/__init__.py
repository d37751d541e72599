"""Learned predictors (calibrated offline on recorded uncached runs) and their profile format.
Host-free: no ComfyUI imports."""
from __future__ import annotations

from .l2p import (L2PTable, SlopeTrajectory, SplitTrajectory, Trajectory, evaluate, evaluate_split, fit, newton_basis,
                  predict, raw_weights)
from .loading import load_l2p_cached
from .profile import (L2PProfile, load_l2p, model_fingerprint, read_profile, register_profile_dir,
                      resolve_profile_path, save_l2p, write_profile)
from .runtime import L2PForecaster, LESAForecaster

__all__ = ["L2PTable", "SlopeTrajectory", "SplitTrajectory", "Trajectory", "evaluate", "evaluate_split", "fit", "newton_basis", "predict", "raw_weights",
           "L2PProfile",
           "load_l2p", "load_l2p_cached", "model_fingerprint", "read_profile", "register_profile_dir",
           "resolve_profile_path", "save_l2p", "write_profile", "L2PForecaster", "LESAForecaster"]
