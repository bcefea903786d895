"""Models with hyper-layers: the hyper-layers themselves (`layers`: HyperConv2d, HyperLinear, HyperBatchNorm2d),
the weight-sharing strategies (`strategy`), `hyperize` for any nn.Module (`hyperize`), torchvision / timm models by
name (`external`) and the zoo: WRN-40-2, WRN-28-10 (32x32), ResNet-50 (ImageNet), WRN-16-2 and WRN-10-2 (small, CPU
demo), and the evaluation models Shake-Shake 26 2x{32,96,112}d and PyramidNet-272 + ShakeDrop (32x32).

    build_model(name, num_classes, strategy="first_bn", lam_dim=LAM_DIM (54)) -> nn.Module, forward(x, lam=None)
    materialize(model, lam) -> plain model theta(lam) (strategy "none")
    MODELS (names -> builders), STRATEGIES (weight-sharing strategies, paper 4.1)
"""
from .registry import MODELS, build_model, hyper_layer_names, materialize
from .resnet import ResNet50
from .strategy import STRATEGIES, LayerFactory
from .wrn import WideResNet

__all__ = ["MODELS", "STRATEGIES", "LayerFactory", "ResNet50", "WideResNet", "build_model", "hyper_layer_names",
           "materialize"]
