"""Publishing encoders to the Hugging Face Hub: validate a checkpoint folder, then upload it.

A publishable folder holds ``config.json`` (a :class:`~largead.LargeADConfig`), ``model.safetensors`` (strictly
loadable) and ``README.md`` (a model card whose YAML says ``library_name: largead``). :func:`validate_folder` checks all
of that and runs a forward pass; :func:`push_folder` refuses an invalid folder before anything is uploaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_FILES = ("config.json", "model.safetensors", "README.md")


def hub_offline() -> bool:
    """Whether the Hugging Face Hub must not be contacted: the one place that decides it (``HF_HUB_OFFLINE``, as
    huggingface_hub read it at import or as the environment says now). Loaders that default to "offline unless told" combine it with their own
    ``local_files_only`` through :func:`local_files_only`."""
    import os

    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE) or env


def local_files_only(requested: bool | None = None) -> bool:
    """``requested`` when given, else :func:`hub_offline`: what a loader passes as ``local_files_only``."""
    return hub_offline() if requested is None else bool(requested)


class InvalidCheckpointFolder(ValueError):
    """The folder cannot be published; the message lists every problem found."""


@dataclass
class ValidationReport:
    folder: Path
    problems: list[str] = field(default_factory=list)
    num_parameters: int = 0
    feature_dim: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def probe_scan(num_points: int = 4000, seed: int = 0) -> np.ndarray:
    """A small deterministic LiDAR-like scan (ground ring + a few boxes), (N, 4) float32, for smoke forward passes."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(2.0, 40.0, num_points)
    phi = rng.uniform(-np.pi, np.pi, num_points)
    z = np.where(rng.random(num_points) < 0.7, -1.8, rng.uniform(-1.8, 2.0, num_points))
    pts = np.stack([r * np.cos(phi), r * np.sin(phi), z, rng.uniform(0, 255, num_points)], 1)
    return pts.astype(np.float32)


def validate_folder(folder: str | Path, forward: bool = True) -> ValidationReport:
    """Check that ``folder`` is a complete, loadable largead checkpoint (see module docstring)."""
    import torch

    folder = Path(folder)
    report = ValidationReport(folder=folder)
    if not folder.is_dir():
        report.problems.append(f"{folder}: not a directory")
        return report
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            report.problems.append(f"{folder / name}: missing")
    if (folder / "config.json").is_file():
        try:
            json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as err:
            report.problems.append(f"{folder / 'config.json'}: not valid JSON ({err})")
    if (folder / "README.md").is_file():
        from huggingface_hub import ModelCard

        try:
            text = (folder / "README.md").read_text(encoding="utf-8")
            if not text.lstrip().startswith("---"):
                raise ValueError("no YAML metadata block at the top")
            card = ModelCard(text)
            if card.data.to_dict().get("library_name") != "largead":
                report.problems.append(f"{folder / 'README.md'}: card metadata must say library_name: largead")
        except Exception as err:  # noqa: BLE001 - any parse failure is a validation problem to report
            report.problems.append(f"{folder / 'README.md'}: model card does not parse ({err})")
    if report.problems:
        return report

    from largead.models.encoder import LargeADEncoder

    try:
        encoder = LargeADEncoder.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - reported, not swallowed: the folder is refused
        report.problems.append(f"{folder}: strict reload failed: {err}")
        return report
    report.num_parameters = sum(p.numel() for p in encoder.parameters())
    if forward:
        encoder.eval()
        probe = probe_scan()
        with torch.no_grad():
            feats = encoder.embed(probe)
        if feats.ndim != 2 or feats.shape[0] != len(probe):
            report.problems.append(f"{folder}: forward pass returned shape {tuple(feats.shape)}, "
                                   f"expected ({len(probe)}, D)")
        elif not torch.isfinite(feats).all():
            report.problems.append(f"{folder}: forward pass produced non-finite features")
        else:
            report.feature_dim = int(feats.shape[1])
    return report


UPLOAD_PATTERNS = ("*.json", "*.safetensors", "*.md", "*.png", "*.yaml")
"""What a push uploads from the folder (weights, configs, card, pictures); checkpoints and logs stay local."""


def card_for_push(folder: str | Path, repo_id: str) -> str:
    """The folder's model card as it will be pushed to ``repo_id`` (:func:`largead.cards.with_repo_id`: its
    placeholder or previous repository id replaced, in the text, the usage snippet and the model-index)."""
    from largead.cards import with_repo_id

    return with_repo_id((Path(folder) / "README.md").read_text(encoding="utf-8"), repo_id)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Validate ``folder`` and upload it to ``repo_id`` in one commit; return the commit URL.

    Raises :class:`InvalidCheckpointFolder` (nothing uploaded) when validation fails. The card is uploaded as
    :func:`card_for_push` renders it for ``repo_id``; the folder on disk is not changed. A failure to reach the Hub
    raises ``ConnectionError`` naming the repository and what to check."""
    import fnmatch

    report = validate_folder(folder)
    if not report.ok:
        raise InvalidCheckpointFolder(f"refusing to upload {folder}: " + "; ".join(report.problems))
    folder = Path(folder)
    card = card_for_push(folder, repo_id)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    from huggingface_hub import CommitOperationAdd

    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in UPLOAD_PATTERNS))
    operations = [CommitOperationAdd(path_in_repo=p.name,
                                     path_or_fileobj=card.encode("utf-8") if p.name == "README.md" else str(p))
                  for p in files]
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id=repo_id, repo_type="model", revision=revision, operations=operations,
            commit_message=commit_message or f"Upload largead encoder ({report.num_parameters / 1e6:.1f}M parameters)")
    except Exception as err:  # noqa: BLE001 - network, auth and permission errors of the Hub client alike
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(err, HfHubHTTPError):
            raise ConnectionError(f"the Hub refused the upload to {repo_id} ({' '.join(str(err).split())[:300]}); "
                                  "check that you are logged in (`hf auth login` or HF_TOKEN) with write "
                                  "access") from None
        raise ConnectionError(f"could not reach the Hugging Face Hub to upload {repo_id} ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:200]}); check the network or proxy") from None
    return str(getattr(info, "commit_url", info))
