"""Data in for AuroraLong: the RWKV World tokenizer, image and video reading, and the processor."""

from .image_io import load_image
from .processing_auroralong import AuroraLongProcessor, LazyVideo
from .tokenization_rwkv_world import RwkvWorldTokenizer
from .video_io import (
    DamagedVideoWarning,
    VideoFrames,
    VideoMetadata,
    VideoPlan,
    iter_video_chunks,
    load_video,
    plan_video,
    read_video,
    sample_frame_indices,
)

__all__ = [
    "AuroraLongProcessor", "DamagedVideoWarning", "LazyVideo", "RwkvWorldTokenizer", "VideoFrames", "VideoMetadata",
    "VideoPlan", "iter_video_chunks", "load_image", "load_video", "plan_video", "read_video", "sample_frame_indices",
]
