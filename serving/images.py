"""Image grids and PNG files: the client's sample grids, and training's TensorBoard grids."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def grid(images, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tiles [N, H, W, C] images in [0, 1] into one [rows·(H+p)+p, cols·(W+p)+p, C] image."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.ones(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        np.float32,
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return canvas


def save_png(path, image: np.ndarray) -> None:
    """Writes an [H, W, C] image in [0, 1] (C = 1 or 3) as an 8-bit PNG."""
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
