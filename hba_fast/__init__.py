"""hba-fast: Hypernetwork-Based Augmentation search (Lin et al., "Hypernetwork-Based Augmentation").

Subpackages: `hba_fast.kernels` (Triton hyper-layer kernels, import only torch + triton),
`hba_fast.pipelines` (DALI and pure-torch data pipelines), `hba_fast.models` (WRN, ResNet-50).
The data flow of a search is in `hba_fast/search.py`.
"""
__version__ = "0.1.0"

__all__ = ["SchedulePolicy", "hyperize"]


def __getattr__(name: str):
    """`hba_fast.SchedulePolicy` and `hba_fast.hyperize`, imported on first use (importing hba_fast stays light)."""
    if name == "SchedulePolicy":
        from .schedule_policy import SchedulePolicy

        return SchedulePolicy
    if name == "hyperize":
        from .hyperized import hyperize

        return hyperize
    raise AttributeError(f"module 'hba_fast' has no attribute {name!r}")
