"""Data in for AuroraLong: the RWKV World tokenizer, image and video reading, and the processor."""

from .image_io import load_image
from .processing_auroralong import AuroraLongProcessor
from .tokenization_rwkv_world import RwkvWorldTokenizer
from .video_io import (
    DamagedVideoWarning,
    VideoFrames,
    VideoMetadata,
    iter_video_chunks,
    load_video,
    read_video,
    sample_frame_indices,
)

__all__ = [
    "AuroraLongProcessor", "DamagedVideoWarning", "RwkvWorldTokenizer", "VideoFrames", "VideoMetadata",
    "iter_video_chunks", "load_image", "load_video", "read_video", "sample_frame_indices",
]
