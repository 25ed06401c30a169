"""Networks: the UNet and its building blocks."""

from .unet import Unet, image_hw

__all__ = ["Unet", "image_hw"]
