"""Image input for AuroraLong: the one place an image becomes pixels, so that every entry point (the processor, the
training collator, the lmms-eval adapter, `tome-viz`) sees an image as a viewer shows it.

A phone JPEG stores the sensor's pixels plus an EXIF Orientation tag (rotate 90 / 180 / 270, or mirror); viewers
apply the tag, and so does `upright` (Pillow's `ImageOps.exif_transpose`). The result is RGB: palette, grey, CMYK
and alpha images are converted (alpha dropped), as `Image.convert("RGB")` does.
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["load_image", "upright"]


def upright(image: Image.Image) -> Image.Image:
    """An RGB copy of `image` turned as its EXIF Orientation tag says (a copy without change when it has none).

    For a multi-frame image (GIF, TIFF) the current frame is used.
    """
    return ImageOps.exif_transpose(image).convert("RGB")


def load_image(source) -> Image.Image:
    """A path, an open binary file or a PIL image -> an RGB PIL image as a viewer shows it (see `upright`).

    Raises FileNotFoundError for a missing path, ValueError naming the file and the reason for one Pillow cannot
    read (not an image, truncated, corrupt) or will not decode: more than twice `Image.MAX_IMAGE_PIXELS` pixels
    (Pillow's decompression-bomb guard: a small file that would decode to gigabytes), TypeError for any other kind
    of source.
    """
    if isinstance(source, Image.Image):
        return upright(source)
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        if not os.path.exists(label):
            raise FileNotFoundError(f"{label}: no such image file")
    elif hasattr(source, "read"):
        label = f"<file object {getattr(source, 'name', '')}>".replace(" >", ">")
    else:
        raise TypeError(f"an image must be a path, an open binary file or a PIL image, got {type(source).__name__}")
    try:
        with Image.open(source) as image:
            return upright(image)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{label}: refused, the image is too large to decode safely: {error}") from None
    except UnidentifiedImageError as error:
        raise ValueError(f"{label}: not an image Pillow can read: {error}") from None
    except (OSError, SyntaxError, EOFError, ValueError) as error:  # Pillow knew the format but could not decode it
        raise ValueError(f"{label}: cannot read this image (truncated or corrupt?): {error}") from None
