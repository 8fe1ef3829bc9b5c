"""Networks as explicit parameter objects over one flat vector ``theta``."""

from mgnn.nets.conv import ConvResNet, ConvResNetParams, ConvWorkspace
from mgnn.nets.resnet import ResNet, ResNetParams, Workspace

__all__ = ["ConvResNet", "ConvResNetParams", "ConvWorkspace", "ResNet", "ResNetParams",
           "Workspace"]
