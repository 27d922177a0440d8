"""Data in for AuroraLong: the RWKV World tokenizer, video decoding and sampling, and the processor."""

from .processing_auroralong import AuroraLongProcessor
from .tokenization_rwkv_world import RwkvWorldTokenizer
from .video_io import VideoFrames, VideoMetadata, iter_video_chunks, load_video, read_video, sample_frame_indices

__all__ = [
    "AuroraLongProcessor", "RwkvWorldTokenizer", "VideoFrames", "VideoMetadata", "iter_video_chunks", "load_video",
    "read_video", "sample_frame_indices",
]
