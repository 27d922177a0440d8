"""processing/video_readers.py: every backend satisfies the reader protocol, and an unknown backend is refused."""

import importlib.util

import numpy as np
import pytest
from media_corpus import write_damaged_h264
from videos import decode_frame_index, write_video

from auroralong_hf.processing import video_io
from auroralong_hf.processing.video_frames import VideoFrames
from auroralong_hf.processing.video_io import BACKENDS, iter_video_chunks, plan_video, probe_video, read_video
from auroralong_hf.processing.video_readers import READERS, VideoReader, reader_class
from auroralong_hf.processing.video_source import VideoSource

HAS_DECORD = importlib.util.find_spec("decord") is not None


def source(path) -> VideoSource:
    return VideoSource(path, network_timeout=video_io.NETWORK_TIMEOUT, max_frame_pixels=video_io.MAX_FRAME_PIXELS)


@pytest.mark.parametrize("backend", [
    "pyav", pytest.param("decord", marks=pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")),
])
def test_each_reader_satisfies_the_protocol(tmp_path, backend):
    video = write_video(tmp_path / "clip.mp4", 12, 10, size=(64, 32))
    reader = READERS[backend](source(video.path))
    assert isinstance(reader, VideoReader) and isinstance(reader.reads_urls, bool)
    assert (reader.metadata, reader.timestamps) == probe_video(video.path, backend=backend)
    assert reader.timestamps == pytest.approx(video.timestamps)
    assert reader.frame_shape == (32, 64, 3)
    chunks = list(reader.read([0, 3, 4, 11], 3))
    assert all(isinstance(chunk, VideoFrames) and chunk.metadata == reader.metadata for chunk in chunks)
    assert [chunk.indices for chunk in chunks] == [[0, 3, 4], [11]]
    assert [decode_frame_index(frame) for chunk in chunks for frame in chunk.frames] == [0, 3, 4, 11]
    assert sum((chunk.timestamps for chunk in chunks), []) == [reader.timestamps[i] for i in (0, 3, 4, 11)]
    small = READERS[backend](source(video.path), max_pixels=16 * 8)
    assert small.frame_shape == (8, 16, 3) and next(small.read([5], 1)).frames.shape == (1, 8, 16, 3)


def test_a_backend_outside_backends_is_refused(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 4, 10).path
    assert BACKENDS == tuple(READERS) == ("pyav", "decord")
    message = r"backend must be one of \('pyav', 'decord'\), got 'opencv'"
    for call in (lambda: read_video(path, backend="opencv"), lambda: probe_video(path, backend="opencv"),
                 lambda: plan_video(path, backend="opencv"), lambda: reader_class("opencv")):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=r"got \['pyav'\]"):  # unhashable: the same error, not a TypeError
        read_video(path, backend=["pyav"])


def test_chunks_warn_about_frames_lost_at_the_end_as_a_whole_read_does(tmp_path):
    path = write_damaged_h264(tmp_path / "damaged.mp4", at="end").video.path  # frames 52 .. 74 are lost
    lost = r"damaged\.mp4: damaged video data .* 2\.480 s -> 2\.040 s"  # the last sampled frame, 62, takes 51
    with pytest.warns(video_io.DamagedVideoWarning, match=lost):
        whole = read_video(path, fps=None, end=2.5)
    with pytest.warns(video_io.DamagedVideoWarning, match=lost):
        chunks = list(iter_video_chunks(path, 5, fps=None, end=2.5))
    assert sum((chunk.indices for chunk in chunks), []) == whole.indices
    assert np.array_equal(np.concatenate([chunk.frames for chunk in chunks]), whole.frames)
