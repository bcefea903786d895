"""hba-fast: Hypernetwork-Based Augmentation search (Lin et al., "Hypernetwork-Based Augmentation").

Subpackages: `hba_fast.kernels` (Triton hyper-layer kernels, import only torch + triton),
`hba_fast.pipelines` (DALI and pure-torch data pipelines), `hba_fast.models` (WRN, ResNet-50).
The data flow of a search is in `hba_fast/search.py`.
"""
__version__ = "0.1.0"
