"""`auroralong tome-viz`: draw how S-ToMe merges a frame's patches and in which order the RNN reads the tokens.

Like the paper's Figure 2: each frame (the model's square input) with its patches coloured by the token they merged
into (every output token's patches share one colour, drawn semi-transparently over the frame, white borders between
groups), and the visiting order (a line through the tokens' centroids in output order, coloured from the first
token to the last, the token indices written at the centroids when there are few enough).

Input: an image Pillow opens (upright by its EXIF orientation; a multi-frame GIF counts as a video, its frames taken
evenly by index) or a video, up to `--frames` frames evenly spaced in time. Images and videos are read, and frames
preprocessed, by the processor a tower of this config gets (`processor_for_vision_config`: display rotation, colour
tags, damaged packets, large frames scaled down; SigLIP's bicubic resize to the config's square image_size, scale
to [0, 1], normalise with mean = std = 0.5), and the resized frames it feeds the tower are the ones drawn.

Matplotlib draws through its Agg canvas only (no pyplot, no display); the PNG is written atomically. The command's
options: auroralong_hf/commands/tome_viz.py.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.errors import StrictDataclassError
from PIL import Image, UnidentifiedImageError

from .loading import check_config_folder
from .modeling.configuration_siglip_tome import SiglipToMeVisionConfig, tokens_per_frame
from .modeling.modeling_siglip_tome import SiglipToMeVisionModel
from .outputs import write_file_atomically
from .processing.image_io import upright
from .processing.processing_auroralong import AuroraLongProcessor
from .processor_setup import processor_for_vision_config

# The random encoder without --model: SigLIP-L's 384/16 patch grid (576 patches) and the paper's 23 layers (so the
# merge schedule is the real one: 23 or 22 merges per layer, 58 tokens left at ratio 0.1), tiny widths.
TINY_ENCODER = {
    "image_size": 384, "patch_size": 16, "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 23,
    "intermediate_size": 64,
}
MAX_NUMBERED_TOKENS = 80  # above this, token indices are not written at the centroids (only the coloured path)


# ----------------------------------------------------------------------------------------------------------------
# reading frames


def even_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `total` frames, first and last included; all of them if fewer."""
    if total <= 0:
        return []
    if count >= total:
        return list(range(total))
    if count == 1:
        return [(total - 1) // 2]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def load_frames(path, max_frames: int = 4, *, processor: AuroraLongProcessor | None = None):
    """Frames of an image or video file as shown: ([F, H, W, 3] uint8, info dict with kind, total_frames, indices).

    An image and a video are read by `processor` (default `processor_for_vision_config()`; reading does not depend
    on the tower): an image upright by its EXIF orientation, a video with its display rotation, each frame's colour
    matrix and range and damaged packets handled, `max_frames` frames evenly spaced in time, either scaled down when
    larger than 4K. A multi-frame image gives `even_indices` of its frames by index, each turned upright.

    Raises FileNotFoundError for a missing file and ValueError (naming the file and why) for one that is neither an
    image Pillow reads nor a video PyAV decodes, or a media file without a video stream.
    """
    path = Path(path)
    if max_frames < 1:
        raise ValueError(f"--frames must be at least 1, got {max_frames}.")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an image or video file.")
    if processor is None:
        processor = processor_for_vision_config()

    try:
        with Image.open(path) as image:
            total = getattr(image, "n_frames", 1)
            indices = even_indices(total, max_frames)
            frames = []
            for index in indices if total > 1 else ():
                image.seek(index)
                frames.append(np.asarray(upright(image)))
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: refused, the image is too large to decode safely: {error}") from None
    except UnidentifiedImageError as image_error:
        return _load_video_frames(path, max_frames, str(image_error), processor)
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # Pillow knew the format but could not decode it
        raise ValueError(f"{path}: cannot read this image (corrupt or truncated?): {error}") from error
    if total == 1:
        return processor.load_image(path), {"kind": "image", "total_frames": total, "indices": indices}
    return np.stack(frames), {"kind": "animated image", "total_frames": total, "indices": indices}


def _load_video_frames(path: Path, max_frames: int, pillow_reason: str, processor: AuroraLongProcessor):
    try:
        video = processor.load_video(path, num_frames=max_frames)
    except ValueError as error:
        if "cannot open as a video" in str(error):
            raise ValueError(f"{path}: neither an image Pillow reads ({pillow_reason}) nor a video PyAV opens: "
                             f"{error}") from error
        raise
    return video.frames, {"kind": "video", "total_frames": video.metadata.num_frames, "indices": list(video.indices)}


# ----------------------------------------------------------------------------------------------------------------
# the model


def build_model(model_dir=None, *, token_kept_ratio=None, sort=None, seed: int = 0):
    """The S-ToMe vision tower: from a folder (`from_pretrained`) or, without one, a seeded random tiny encoder with
    a real 384/16 patch grid. `token_kept_ratio` (`SiglipToMeVisionConfig.set_token_kept_ratio`) and `sort`, when
    given, override the config's; a value the config refuses is a ValueError."""
    try:
        if model_dir:
            folder = check_config_folder(model_dir)
            config = SiglipToMeVisionConfig.from_pretrained(str(folder))
            source = str(folder)
        else:
            config = SiglipToMeVisionConfig(**TINY_ENCODER)
            source = (f"random tiny encoder (seed {seed}; {TINY_ENCODER['num_hidden_layers']} layers, hidden "
                      f"{TINY_ENCODER['hidden_size']})")
        if token_kept_ratio is not None:
            config.set_token_kept_ratio(token_kept_ratio)
        if sort is not None:
            config.tome_sort = sort
            config.validate_architecture()
        if model_dir:
            model = SiglipToMeVisionModel.from_pretrained(str(folder), config=config)
        else:
            torch.manual_seed(seed)
            model = SiglipToMeVisionModel(config)
    except StrictDataclassError as error:  # the config's validation: a ValueError for the command line
        raise ValueError(str(error)) from error
    return model.eval(), source


def merge_groups(merge_sources, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From one frame's merge_sources [T, N]: (label [gh, gw] = output token index covering each patch, -1 where none;
    centroids [T, 2] as (x, y) in patch units; sizes [T])."""
    sources = np.asarray(merge_sources, dtype=bool)
    gh, gw = grid
    covered = sources.any(0)
    label = np.where(covered, sources.argmax(0), -1).reshape(gh, gw)
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    sizes = sources.sum(1)
    safe = np.maximum(sizes, 1)
    centroids = np.stack([(sources @ (cols + 0.5)) / safe, (sources @ (rows + 0.5)) / safe], axis=1)
    return label, centroids, sizes


# ----------------------------------------------------------------------------------------------------------------
# drawing


def _group_colours(count: int) -> np.ndarray:
    """`count` RGB colours, consecutive ones far apart in hue (golden-ratio steps), alternating lightness."""
    from matplotlib.colors import hsv_to_rgb

    index = np.arange(count)
    hsv = np.stack([(index * 0.618033988749895) % 1.0, 0.55 + 0.35 * (index % 2), 0.95 - 0.2 * (index % 3 == 2)], 1)
    return hsv_to_rgb(hsv)


def _borders(label: np.ndarray) -> list:
    """Line segments (patch units) between neighbouring patches of different groups."""
    gh, gw = label.shape
    segments = []
    rows, cols = np.nonzero(label[:, 1:] != label[:, :-1])
    segments += [((c + 1, r), (c + 1, r + 1)) for r, c in zip(rows, cols, strict=True)]
    rows, cols = np.nonzero(label[1:, :] != label[:-1, :])
    segments += [((c, r + 1), (c + 1, r + 1)) for r, c in zip(rows, cols, strict=True)]
    return segments


def draw_figure(images, labels, centroids, titles, suptitle, *, alpha: float = 0.45, cmap_name: str = "plasma"):
    """A matplotlib Figure (Agg canvas) of the frames in a grid."""
    import matplotlib
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    count = len(images)
    ncols = min(count, 2) if count <= 4 else math.ceil(math.sqrt(count))
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(5.0 * ncols + 0.9, 5.0 * nrows + 0.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cmap = matplotlib.colormaps[cmap_name]
    tokens = max(len(c) for c in centroids)
    norm = Normalize(0, max(tokens - 1, 1))

    for ax, image, label, centre, title in zip(axes.flat, images, labels, centroids, titles, strict=False):
        gh, gw = label.shape
        extent = (0, gw, gh, 0)
        ax.imshow(image, extent=extent, interpolation="bilinear")
        colours = _group_colours(len(centre))
        overlay = np.zeros((gh, gw, 4))
        covered = label >= 0
        overlay[covered, :3] = colours[label[covered]]
        overlay[covered, 3] = alpha
        overlay[~covered] = (0.3, 0.3, 0.3, 0.75)  # a patch no output token covers (the dropped first token)
        ax.imshow(overlay, extent=extent, interpolation="nearest")
        ax.add_collection(LineCollection(_borders(label), colors="white", linewidths=1.1, alpha=0.95))

        order = np.arange(len(centre))
        if len(centre) > 1:
            path = np.stack([centre[:-1], centre[1:]], axis=1)
            halo = LineCollection(path, colors="black", linewidths=3.2, alpha=0.55, capstyle="round")
            ax.add_collection(halo)
            ax.add_collection(LineCollection(path, cmap=cmap, norm=norm, array=order[:-1] + 0.5, linewidths=1.8,
                                             capstyle="round"))
        ax.scatter(centre[:, 0], centre[:, 1], c=order, cmap=cmap, norm=norm, s=16, edgecolors="black",
                   linewidths=0.5, zorder=3)
        ax.scatter(centre[:1, 0], centre[:1, 1], marker="o", s=110, facecolors="none", edgecolors="white",
                   linewidths=2.0, zorder=4)
        ax.scatter(centre[-1:, 0], centre[-1:, 1], marker="s", s=110, facecolors="none", edgecolors="white",
                   linewidths=2.0, zorder=4)
        if len(centre) <= MAX_NUMBERED_TOKENS:
            stroke = [patheffects.withStroke(linewidth=2.2, foreground="black")]
            for index, (x, y) in enumerate(centre):
                ax.annotate(str(index), (x, y), xytext=(2.5, 2.5), textcoords="offset points", fontsize=6.5,
                            color="white", path_effects=stroke, zorder=5)
        ax.set_xlim(0, gw)
        ax.set_ylim(gh, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=10)
    for ax in axes.flat[count:]:
        ax.set_axis_off()

    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.01, fraction=0.04)
    bar.set_label("visiting order: token index in the output sequence (o first, \u25a1 last)")
    width_chars = int(fig.get_figwidth() * 12)  # about 12 characters per inch at 11 pt
    fig.suptitle("\n".join(textwrap.fill(line, width_chars) for line in suptitle.splitlines()), fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# the command


def tome_viz(path, output, *, token_kept_ratio=None, model_dir=None, frames: int = 4, sort=None, seed: int = 0,
             model=None) -> dict:
    """Draw the merge groups and visiting order of up to `frames` frames of `path` into the PNG `output`.

    Returns a report: output, source, frames used, token counts, ratio, sort. Raises FileExistsError when `output`
    is a directory.
    """
    if Path(output).is_dir():  # checked first: the rename would fail only after the model has run
        raise FileExistsError(f"{output}: exists and is a directory; -o/--output names the PNG file to write "
                              f"(e.g. {Path(output) / 'tome.png'})")
    if model is None:
        model, source = build_model(model_dir, token_kept_ratio=token_kept_ratio, sort=sort, seed=seed)
    else:
        source = type(model).__name__
    config = model.config
    processor = processor_for_vision_config(config)
    pictures, info = load_frames(path, frames, processor=processor)
    resized = processor.resize_frames(pictures)  # [F, S, S, 3] uint8: what the tower sees, and what is drawn
    pixel_values = processor.normalize_frames(resized)
    with torch.inference_mode():
        out = model(pixel_values=pixel_values.to(model.dtype), output_merge_sources=True)
    sources = out.merge_sources.cpu().numpy()
    patch = config.patch_size
    height, width = resized.shape[1:3]
    grid = (height // patch, width // patch)

    labels, centroids = [], []
    for frame_sources in sources:
        label, centre, _ = merge_groups(frame_sources, grid)
        labels.append(label)
        centroids.append(centre)
    tokens = sources.shape[1]
    if tokens != tokens_per_frame(config):
        raise RuntimeError(f"the model returned {tokens} tokens per frame, its config says {tokens_per_frame(config)}.")

    name = Path(path).name
    if info["kind"] == "image":
        titles = [name]
    else:
        titles = [f"{name}: frame {index + 1} of {info['total_frames']}" for index in info["indices"]]
    suptitle = (f"S-ToMe, kept ratio {config.token_kept_ratio:g}: {tokens} tokens per frame "
                f"(of {grid[0]}x{grid[1]} = {grid[0] * grid[1]} patches)\n"
                f"order \"{config.tome_sort}\", schedule \"{config.tome_schedule}\"\n{source}")
    fig = draw_figure(resized, labels, centroids, titles, suptitle)
    written = write_file_atomically(output, lambda tmp: fig.savefig(tmp, format="png"))
    return {
        "output": str(written), "input": str(path), "kind": info["kind"], "total_frames": info["total_frames"],
        "frame_indices": info["indices"], "model": source, "token_kept_ratio": config.token_kept_ratio,
        "sort": config.tome_sort, "schedule": config.tome_schedule, "merge_schedule": config.merge_schedule(),
        "num_patches": grid[0] * grid[1], "tokens_per_frame": tokens,
    }


__all__ = ["build_model", "even_indices", "load_frames", "merge_groups", "tome_viz"]
