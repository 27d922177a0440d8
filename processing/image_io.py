"""Image input for AuroraLong: the one place an image becomes pixels, so that every entry point (the processor, the
training collator, the lmms-eval adapter, `tome-viz`) sees an image as a viewer shows it.

A phone JPEG stores the sensor's pixels plus an EXIF Orientation tag (rotate 90 / 180 / 270, or mirror); viewers
apply the tag, and so does `upright` (Pillow's `ImageOps.exif_transpose`). The result is RGB: palette, grey, CMYK
and alpha images are converted (alpha dropped), as `Image.convert("RGB")` does.

Large images: Pillow refuses more than twice `Image.MAX_IMAGE_PIXELS` pixels (a decompression bomb); below that,
`max_pixels` keeps a large image from being turned upright and converted at full size: a JPEG is decoded at 1/2,
1/4 or 1/8 scale (`Image.draft`, in the DCT), any other format reduced by an integer factor (`Image.reduce`, box
averaging) right after decoding, to the smallest such size that still has at least `max_pixels` pixels.
"""

from __future__ import annotations

import math
import os

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = ["load_image", "upright"]

_AVERAGED_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")  # modes Image.reduce averages meaningfully


def upright(image: Image.Image) -> Image.Image:
    """An RGB copy of `image` turned as its EXIF Orientation tag says (a copy without change when it has none).

    For a multi-frame image (GIF, TIFF) the current frame is used.
    """
    return ImageOps.exif_transpose(image).convert("RGB")


def _reduced(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """`image` (opened, not yet loaded) reduced for `max_pixels` as the module docstring says."""
    width, height = image.size
    if max_pixels is None or width * height <= max_pixels:
        return image
    factor = math.sqrt(width * height / max_pixels)  # > 1: every reduction by at most this keeps >= max_pixels
    if image.format == "JPEG":
        # draft picks the largest DCT scale whose size is at least the one asked for
        image.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        return image
    if int(factor) < 2:
        return image
    # The orientation still to apply, as `upright` would find it on the full image: a TIFF turns itself upright as
    # it loads (and drops the tag), while its reduced copy would inherit the raw EXIF block and turn again.
    image.load()
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    if image.mode not in _AVERAGED_MODES:  # palette, bilevel, 16-bit grey: averaging needs the colours first
        image = image.convert("RGB")
    reduced = image.reduce(int(factor))
    exif = reduced.getexif()
    if orientation is None:
        exif.pop(ExifTags.Base.Orientation, None)
    else:
        exif[ExifTags.Base.Orientation] = orientation
    return reduced


def load_image(source, max_pixels: int | None = None) -> Image.Image:
    """A path, an open binary file or a PIL image -> an RGB PIL image as a viewer shows it (see `upright`).

    `max_pixels`: an image read from a file with more pixels is decoded reduced, to no fewer than `max_pixels`
    pixels (module docstring); None (default) keeps the full size. A PIL image is taken as it is.

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
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0):
        raise ValueError(f"max_pixels must be an int > 0 or None, got {max_pixels!r}")
    try:
        with Image.open(source) as image:
            return upright(_reduced(image, max_pixels))
    except Image.DecompressionBombError as error:
        raise ValueError(f"{label}: refused, the image is too large to decode safely: {error}") from None
    except UnidentifiedImageError as error:
        raise ValueError(f"{label}: not an image Pillow can read: {error}") from None
    except (OSError, SyntaxError, EOFError, ValueError) as error:  # Pillow knew the format but could not decode it
        raise ValueError(f"{label}: cannot read this image (truncated or corrupt?): {error}") from None
