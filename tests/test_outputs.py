"""Atomic output files (auroralong_hf/outputs.py) and the synthetic clip (auroralong_hf/synthetic_video.py)."""

import av
import pytest

from auroralong_hf.outputs import write_file_atomically
from auroralong_hf.synthetic_video import write_synthetic_video


def test_a_complete_write_replaces_the_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    assert write_file_atomically(path, lambda tmp: tmp.write_bytes(b"new")) == path
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temporary left


def test_a_missing_folder_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    write_file_atomically(str(path), lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("failure", [ValueError("the writer failed"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path, failure):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def write(tmp):
        tmp.write_bytes(b"half of the new")  # the writer got part of the way
        raise failure

    with pytest.raises(type(failure)):
        write_file_atomically(path, write)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_an_os_error_names_the_output_not_the_temporary(tmp_path):
    path = tmp_path / "out.bin"

    def write(tmp):
        raise PermissionError(13, "Permission denied", str(tmp))

    with pytest.raises(PermissionError) as raised:
        write_file_atomically(path, write)
    assert raised.value.filename == str(path) and raised.value.errno == 13
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_the_synthetic_clip_decodes_with_the_frames_and_size_asked(tmp_path, codec):
    path = write_synthetic_video(tmp_path / "clip.mp4", 10, fps=5, size=(96, 64), codec=codec)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert stream.codec_context.name == ("h264" if codec == "libx264" else "mpeg4")
    assert len(frames) == 10 and {frame.shape for frame in frames} == {(64, 96, 3)}
    assert not (frames[0] == frames[5]).all()  # the ball moves
