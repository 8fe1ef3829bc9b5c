"""Networks as explicit parameter objects over one flat vector ``theta``."""

from mgnn.nets.resnet import ResNet, ResNetParams, Workspace

__all__ = ["ResNet", "ResNetParams", "Workspace"]
