"""nin-layers: Network-in-Network classification heads for Keras 3.

1x1 convolutions and global average pooling instead of Dense layers
(Lin, Chen & Yan, 2013, https://arxiv.org/abs/1312.4400).
"""

from nin_layers.data import Dataset, load_dataset
from nin_layers.heads import PointwiseClassifierHead
from nin_layers.models import AllConvNet
from nin_layers.training import TrainResult, train
from nin_layers.tuning import AllConvNetHyperModel

__version__ = "0.1.0"

__all__ = [
    "AllConvNet",
    "AllConvNetHyperModel",
    "Dataset",
    "PointwiseClassifierHead",
    "TrainResult",
    "__version__",
    "load_dataset",
    "train",
]
