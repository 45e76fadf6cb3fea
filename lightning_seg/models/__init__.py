"""Segmentation nets. Each is built as ``Net(num_classes, ...)``; see :mod:`lightning_seg.models.outputs`.
:class:`ImageClassifier` is the image-level classifier (``ImageClassifier(num_labels, ...)``) of
:class:`~lightning_seg.task.classifier.ImageClassifierModule`."""

from lightning_seg.models.classifier import ImageClassifier
from lightning_seg.models.micro_unet import MicroUNet
from lightning_seg.models.outputs import NetOutput, as_net_output, pad_to_multiple
from lightning_seg.models.resnet_unet import ResNetUNet
from lightning_seg.models.smp import SMPNet
from lightning_seg.models.torchvision import TorchvisionNet
from lightning_seg.models.transformers import TransformersNet
from lightning_seg.models.unet import UNet
from lightning_seg.models.weight_files import WeightsFile

__all__ = [
    "ImageClassifier",
    "MicroUNet",
    "NetOutput",
    "ResNetUNet",
    "SMPNet",
    "TorchvisionNet",
    "TransformersNet",
    "UNet",
    "WeightsFile",
    "as_net_output",
    "pad_to_multiple",
]
