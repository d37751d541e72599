"""The profile folder, models/dit_accel/, in one place: registered with ComfyUI's folder_paths, listed for the
node combos, every name confined to the folder (a symlink that leads out is never opened), and handed to the
core (`register_profile_dir`) before a profile is checked against the model when a node runs."""
from __future__ import annotations

import os

from accel_core import ConfigError

PROFILE_FOLDER = "dit_accel"  # models/dit_accel/: calibration profiles (*.safetensors)


def register_profile_folder() -> None:
    import folder_paths

    if PROFILE_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[PROFILE_FOLDER] = (
            [os.path.join(folder_paths.models_dir, PROFILE_FOLDER)], {".safetensors"})


def profile_file(name: str) -> str | None:
    """The real path of profile `name` in models/dit_accel/, or None when it is not there or its real path
    (symlinks resolved before anything is opened) lies outside the folder."""
    import folder_paths

    from accel_core.learned.profile import confined

    register_profile_folder()
    full = folder_paths.get_full_path(PROFILE_FOLDER, name) if name else None
    if full is None:
        return None
    real = confined(full, folder_paths.get_folder_paths(PROFILE_FOLDER))
    return str(real) if real is not None else None


def profile_files() -> list[tuple[str, str]]:
    """(name, real path) of the files in models/dit_accel/ that really lie inside it; a symlink that leads
    out of the folder is neither listed nor opened."""
    import folder_paths

    register_profile_folder()
    found = [(n, profile_file(n)) for n in folder_paths.get_filename_list(PROFILE_FOLDER)]
    return [(n, full) for n, full in found if full is not None]


def outside_folder_error(node: str, name: str) -> ConfigError:
    return ConfigError(f"{node}: profile {name!r} is not in models/dit_accel/ (missing, or a link that leads "
                       "outside the folder, which is never read). Pick one of the listed files, or copy the profile "
                       "into models/dit_accel/.")


def profile_folder() -> str:
    """The folder new profiles are saved to (the first registered one)."""
    import folder_paths

    register_profile_folder()
    return folder_paths.get_folder_paths(PROFILE_FOLDER)[0]


def profile_path(stem: str) -> str:
    return os.path.join(profile_folder(), stem + ".safetensors")


def hyca_profiles() -> list[str]:
    """HyCa profiles in models/dit_accel/ (shared format with method hyca, or the old HyCa format)."""
    from accel_core.learned.hyca_profile import is_hyca_profile

    return [n for n, full in profile_files() if is_hyca_profile(full)]


def learned_profiles() -> list[str]:
    """L2P and LESA profiles in models/dit_accel/ (other safetensors there, e.g. HyCa profiles, are left out;
    so is a link that leads outside the folder, unopened)."""
    from accel_core.learned.profile import profile_method

    return [n for n, full in profile_files() if profile_method(full) in ("l2p", "lesa")]


def check_learned_profile(name: str, family: str, diffusion_model) -> None:
    """Register ComfyUI's profile folder(s) with the core and check the profile against this model
    (family and weight fingerprint): fail when the node runs, naming the profile, not mid-sampling."""
    import folder_paths

    from accel_core.learned import load_l2p_cached, model_fingerprint, register_profile_dir
    from accel_core.learned.profile import check_header

    folders = folder_paths.folder_names_and_paths.get(PROFILE_FOLDER, ([os.path.join(folder_paths.models_dir,
                                                                                       PROFILE_FOLDER)],))[0]
    for folder in folders:
        register_profile_dir(folder)
    profile = load_l2p_cached(name)
    check_header(profile.header, os.path.basename(profile.source), profile.method, family,
                 model_fingerprint(diffusion_model.state_dict()))


def check_hyca_profile(path: str, family: str, diffusion_model) -> None:
    """Let the core read profiles from models/dit_accel/ and check the HyCa profile against this model
    (family, weight fingerprint, hidden size) when Forecast Cache runs, naming the profile, rather than at
    the first full step mid-sampling."""
    import folder_paths

    from accel_core.learned.hyca_profile import MEMORY_PREFIX, load_profile
    from accel_core.learned import model_fingerprint, register_profile_dir

    if str(path).startswith(MEMORY_PREFIX):
        return  # a calibration candidate, made from this model
    register_profile_folder()
    for folder in folder_paths.get_folder_paths(PROFILE_FOLDER):
        register_profile_dir(folder)
    profile = load_profile(path, family=family, fingerprint=model_fingerprint(diffusion_model.state_dict()))
    hidden = getattr(diffusion_model, "hidden_size", None) or getattr(diffusion_model, "inner_dim", None)
    profile.check_compatible(family, hidden)
