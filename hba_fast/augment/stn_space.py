"""STN's CIFAR-10 search space: 15 regularisation hyperparameters of an AlexNet (paper 4.3, Table 6).

Facts read from Self-Tuning Networks' code (MacKay et al. 2019, github.com/asteroidhouse/self-tuning-networks,
`cnn/hypertrain.py` with `--tune_all` on `--model alexnet`, `cnn/util/hyperparameter.py::create_hparams`):

    name         range      init   transform                  consumer / what it does
    dropout0-4   (0, 0.9)   0.05   stretched logit            model: channel dropout (dropout_2d) after conv 0-4
    fcdropout0-1 (0, 0.9)   0.05   stretched logit            model: dropout before fc1 and before fc2
    indropout    (0, 1)     0.05   logit                      input: element-wise dropout of the input image
    inscale      (0, 0.3)   0.05   stretched logit            input: x * u, u ~ U[1 / (1 + s), 1 + s] per sample
    hue          (0, 0.5)   0.05   logit(2 h) = stretched     input: ColorJitter hue, shift ~ U[-h, h]
    contrast     (0, 1)     0.05   logit                      input: ColorJitter contrast, factor ~ U[1 - c, 1 + c]
    sat          (0, 1)     0.05   logit                      input: ColorJitter saturation, U[1 - s, 1 + s]
    bright       (0, 1)     0.05   logit                      input: ColorJitter brightness, U[1 - b, 1 + b]
    cutlength    [0, 24]    4      stretched logit, discrete  input: Cutout side (px), floor of the value
    cutholes     [0, 4]     1      stretched logit, discrete  input: Cutout holes, floor of the value
That is 8 dropout rates (5 conv, 2 fc, 1 input) and 7 augmentation hyperparameters, the paper's 15.
STN's `drop_max = 0.9` caps every dropout rate but the input's ("improves stability", its comment).
Order here: STN's `create_hparams` order under --tune_all (dropout0-4, hue, contrast, sat, bright, indropout,
inscale, cutlength, cutholes, fcdropout0-1).

Two quirks of STN's code, kept or not as said:
- cutlength's initial unbounded value is s_logit(4, 0, 25) while its range (used to decode) is (0, 24), so STN
  starts at 24 * 4/25 = 3.84 px, floored to 3. Here the initial value is 4 in [0, 24] (STN's `--start_cutlength`).
- The jitter values are `robustified` before use: j' = (1 - 2e-3) j + 1e-3 (`datasets/cifar.py::set_jitters`),
  so a jitter is never exactly 0; `augment/regularisers.py` applies the same.
"""
from __future__ import annotations

from .table_space import Hyperparameter, TableSpace

DROP_MAX = 0.9  # STN's cap on the dropout rates of the layers


def stn_cifar_space() -> TableSpace:
    drop = [Hyperparameter(f"dropout{i}", 0.0, DROP_MAX, 0.05, doc=f"channel dropout after conv {i}")
            for i in range(5)]
    jitter = [
        Hyperparameter("hue", 0.0, 0.5, 0.05, consumer="input", doc="hue shift ~ U[-h, h] (turns)"),
        Hyperparameter("contrast", 0.0, 1.0, 0.05, consumer="input", doc="contrast factor ~ U[1 - c, 1 + c]"),
        Hyperparameter("sat", 0.0, 1.0, 0.05, consumer="input", doc="saturation factor ~ U[1 - s, 1 + s]"),
        Hyperparameter("bright", 0.0, 1.0, 0.05, consumer="input", doc="brightness factor ~ U[1 - b, 1 + b]"),
    ]
    rest = [
        Hyperparameter("indropout", 0.0, 1.0, 0.05, consumer="input", doc="element-wise dropout of the input"),
        Hyperparameter("inscale", 0.0, 0.3, 0.05, consumer="input", doc="input scale u ~ U[1/(1+s), 1+s]"),
        Hyperparameter("cutlength", 0.0, 24.0, 4.0, consumer="input", discrete=True, doc="Cutout side (px)"),
        Hyperparameter("cutholes", 0.0, 4.0, 1.0, consumer="input", discrete=True, doc="Cutout holes"),
    ]
    fc = [Hyperparameter(f"fcdropout{i}", 0.0, DROP_MAX, 0.05, doc=f"dropout before fc{i + 1}") for i in range(2)]
    return TableSpace("stn-cifar", tuple(drop + jitter + rest + fc))
