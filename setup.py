"""hba-fast: Hypernetwork-Based Augmentation search, fast (see README.md)."""
from setuptools import find_packages, setup

setup(
    name="hba-fast",
    version="0.1.0",
    description="Hypernetwork-Based Augmentation (HBA): learn augmentation schedules in one training run",
    packages=find_packages(include=["hba_fast", "hba_fast.*"]),
    package_data={"hba_fast": ["configs/*.yaml"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "pyyaml", "pillow", "matplotlib", "tqdm", "scipy"],
    extras_require={
        "triton": ["triton>=3.0"],
        "dali": ["nvidia-dali-cuda130"],
        "models": ["torchvision", "timm"],  # model.name=torchvision:NAME | timm:NAME, hba_fast.hyperize on them
        "albumentations": ["albumentations"],  # hba-fast export --to albumentations
        "tensorboard": ["tensorboard"],  # run.tensorboard: true
        "test": ["pytest", "triton>=3.0", "nvidia-dali-cuda130", "torchvision", "timm", "albumentations",
                 "tensorboard"],
    },
    entry_points={"console_scripts": ["hba-fast=hba_fast.cli:main"]},
)
