"""Hostile and broken images, out-of-range numbers on the predict and push command lines, output paths that would
replace what they must not: each is refused with one line.

Images: what a user (or an attacker) can hand to ``predict``: empty files, directories, devices, empty PIL images,
truncated PNG/JPEG, non-images, decompression bombs (a 30000 x 30000 PNG of a few hundred kB). Numbers: NaN,
infinities, negative and out-of-range thresholds, zero/negative/fractional counts. Budget: well under 20 s.
"""
from __future__ import annotations

import os
import re
import socket
import stat
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from razorzoo.arch.recipes import RECIPES
from razorzoo.bounded import InputError
from razorzoo.cli import main
from razorzoo.detection.postprocess import with_overrides
from razorzoo.detection.transforms import MAX_IMAGE_PIXELS, load_image
from razorzoo.errors import ImageError

PHOTO = Path(skimage.data.__file__).parent / "astronaut.png"  # CC0 (skimage.data docstring)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")  # never to a terminal (newline, tab are fine)


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes | None = None) -> bytes:
    """A PNG written chunk by chunk: the header, one IDAT of already compressed rows (or none), the end."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    body = chunk(b"IDAT", idat) if idat is not None else b""
    return b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IEND", b"")


def _bomb_1bit(side: int) -> bytes:
    """A valid black-and-white PNG of side x side pixels: ~110 kB on disk for 30000, 2.7 GB once decoded to BGR."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + 1 bit per pixel
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return _png(side, side, 1, 0, idat)


def _truncated(suffix: str) -> bytes:
    ok, encoded = cv2.imencode(suffix, cv2.imread(str(PHOTO)))
    assert ok
    return encoded.tobytes()[: len(encoded) // 2]


def _bmp_header(width: int, height: int) -> bytes:
    """A BMP file header and info header declaring width x height at 24 bits, with no pixel data."""
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0,
                                                                     2835, 2835, 0, 0)


def _jpeg_header(width: int, height: int) -> bytes:
    """A JPEG holding only a start-of-frame marker that declares width x height."""
    return b"\xff\xd8\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00\xff\xd9"


def _gif_header(width: int, height: int) -> bytes:
    screen = struct.pack("<HH", width, height) + b"\x00\x00\x00"
    return b"GIF89a" + screen + b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00\x3b"


BROKEN_FILES = {
    "zero_bytes": (lambda: b"", "empty \\(0 bytes\\)"),
    "text_named_png": (lambda: b"hello, I am not a picture\n", "not an image file of a known format"),
    "truncated_png": (lambda: _truncated(".png"), "truncated or corrupt"),
    "truncated_jpeg": (lambda: _truncated(".jpg"), "truncated or corrupt"),
    "png_header_only_30000x30000": (lambda: _png(30000, 30000, 8, 2), "more than 134217728 pixels"),
    "png_bomb_30000x30000_1bit": (lambda: _bomb_1bit(30000), "more than 134217728 pixels"),
    "png_bomb_just_over_the_cap": (lambda: _png(2**14, 2**13 + 1, 8, 0), "16384x8193: more than 134217728 pixels"),
    "png_zero_width": (lambda: _png(0, 10, 8, 0), "not an image file of a known format"),
    "bmp_bomb_40000x40000": (lambda: _bmp_header(40000, 40000), "more than 134217728 pixels"),
    "bmp_negative_height_no_pixels": (lambda: _bmp_header(100, -100), "cannot decode"),
    "jpeg_bomb_65535x65535": (lambda: _jpeg_header(65535, 65535), "more than 134217728 pixels"),
    "gif_bomb_65535x65535": (lambda: _gif_header(65535, 65535), "more than 134217728 pixels"),
    "pgm_bomb_100000x100000": (lambda: b"P5\n100000 100000\n255\n", "more than 134217728 pixels"),
    "webp_header_only": (lambda: b"RIFF\x00\x00\x00\x00WEBPVP8 ", "truncated or corrupt"),
    "svg_named_png": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="1e6" height="1e6"/>',
                      "not an image file of a known format"),
}


@pytest.mark.parametrize("kind", BROKEN_FILES)
def test_broken_or_hostile_image_files_are_refused_before_decoding(tmp_path, capfd, kind):
    make, message = BROKEN_FILES[kind]
    path = tmp_path / f"{kind}.{'jpg' if 'jpeg' in kind else 'png'}"
    path.write_bytes(make())
    start = time.perf_counter()
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert time.perf_counter() - start < 2.0  # refused from the header, not after decoding gigabytes
    assert "\n" not in str(info.value) and path.name in str(info.value)
    assert capfd.readouterr() == ("", "")  # the ImageError is the only line: no OpenCV or Pillow log on the side


PATHS = {  # kind: (path under tmp_path, or absolute; expected message)
    "directory": (".", "is a directory"), "device": ("/dev/null", "not a regular file"),
    "missing": ("nope.png", "not found"), "empty string": ("", "the image path is empty"),
    "name too long": ("x" * 100_000 + ".png", "cannot read .*File name too long"),
    "symlink loop": ("loop.png", "cannot read .*symbolic links"), "under a file": ("file.png/x.png", "Not a directory"),
}


@pytest.mark.parametrize("kind", PATHS)
def test_paths_that_are_not_image_files(tmp_path, kind):
    name, message = PATHS[kind]
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "file.png").write_bytes(PHOTO.read_bytes())
    path = name if kind == "empty string" else tmp_path / name
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (5, 0)])
def test_empty_pil_images(size):
    with pytest.raises(ImageError, match=f"empty \\({size[0]}x{size[1]} pixels\\)"):
        load_image(Image.new("RGB", size))


@pytest.mark.parametrize("mode", ["1", "L", "RGB"])
def test_pil_images_over_the_pixel_cap_are_refused_before_converting(mode):
    image = Image.new(mode, (2**14, 2**13 + 1))  # 1 bit per pixel: 17 MB here, 400 MB once converted to BGR
    with pytest.raises(ImageError, match="the PIL image is 16384x8193: more than 134217728 pixels"):
        load_image(image)


def test_the_pixel_cap_leaves_normal_photos_alone():
    assert MAX_IMAGE_PIXELS == 2**27
    assert load_image(PHOTO).shape == (512, 512, 3)


@pytest.mark.parametrize("depth", ["grey8", "grey16", "rgb16", "grey_alpha"])
def test_grey_and_16_bit_files_decode_like_mmcv(tmp_path, depth):
    """mmcv's LoadImageFromFile is cv2.imdecode(IMREAD_COLOR): grey -> 3 equal channels, 16 bit -> high byte,
    alpha dropped. razorzoo decodes the same way (after the header checks)."""
    path = tmp_path / f"{depth}.png"
    value = {"grey8": 0x5A, "grey16": 0x5A3C, "rgb16": 0x5A3C, "grey_alpha": 0x5A}[depth]
    dtype = np.uint16 if "16" in depth else np.uint8
    shape = {"grey8": (6, 7), "grey16": (6, 7), "rgb16": (6, 7, 3), "grey_alpha": (6, 7, 4)}[depth]
    cv2.imwrite(str(path), np.full(shape, value, dtype=dtype))
    image = load_image(path)
    assert image.shape == (6, 7, 3) and image.dtype == np.uint8
    assert (image == 0x5A).all()


# --- numbers on the command line and in the API -----------------------------------------------------------------

BAD_OPTIONS = [
    ("--score-thr", "nan"), ("--score-thr", "inf"), ("--score-thr", "-0.1"), ("--score-thr", "1.5"),
    ("--score-thr", "abc"), ("--iou-thr", "-3"), ("--iou-thr", "nan"), ("--iou-thr", "1e400"),
    ("--max-det", "0"), ("--max-det", "-1"), ("--max-det", "2.5"), ("--max-det", "9" * 100), ("--topk", "0"),
    ("--topk", "1001"), ("--score-thr", "-inf"), ("--score-thr", "-nan"), ("--score-thr", "0x1p-1"),
    ("--iou-thr", "inf"), ("--iou-thr", "-1e-400x"), ("--max-det", "nan"), ("--max-det", "inf"), ("--max-det", "1e3"),
    ("--topk", "nan"), ("--topk", "-1"), ("--topk", "0x10"), ("--topk", "\x1b[2J"),
]


@pytest.mark.parametrize("option,value", BAD_OPTIONS)
def test_predict_refuses_bad_numbers_in_one_line(capsys, option, value):
    with pytest.raises(SystemExit) as info:
        main(["predict", "rtmdet_tiny-ofa_lat31", str(PHOTO), f"{option}={value}"])  # '=': "-inf" is no option
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("razorzoo predict: error: argument") and f"{option} must be" in last
    assert len(last) < 200 and not CONTROL.search(last)


@pytest.mark.parametrize("override,value", [("score_thr", float("nan")), ("score_thr", -1), ("score_thr", 1.5),
                                            ("iou_thr", -0.1), ("iou_thr", 2.0),
                                            ("iou_thr", float("inf")), ("max_det", 0), ("max_det", 1.5),
                                            ("max_det", True), ("score_thr", "0.5; rm -rf /")])
def test_library_overrides_are_checked(override, value):
    with pytest.raises(InputError, match=f"^{override} must be "):  # named as the user spelled the argument
        with_overrides(RECIPES["rtmdet_tiny"].test_cfg, **{override: value})


def test_predict_out_pointing_at_a_file_is_one_line(tmp_path, capsys):
    existing = tmp_path / "result.png"
    existing.write_bytes(b"keep me")
    assert main(["predict", "rtmdet_tiny-ofa_lat31", str(PHOTO), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: --out") and "exists and is not a folder" in err and err.count("\n") == 1
    assert existing.read_bytes() == b"keep me"


PUSH_GARBAGE = [
    ("--metric", "box_ap=nan", "must be a finite number"), ("--metric", "top1=-inf", "must be a finite number"),
    ("--metric", "top1=1e999", "must be a finite number"), ("--metric", "top1=0x1p3", "must be a number"),
    ("--metric", "\x1b[2J=1", "is not a plain name"), ("--metric", "a" * 100_000 + "=1", "is not a plain name"),
    ("--metric", "top 1=76", "is not a plain name"), ("--constraint", "flops<=1\x1b]0;pwned\x07", "one printable line"),
    ("--constraint", "x" * 100_000, "one printable line"), ("--constraint", "a\nb", "one printable line"),
]


@pytest.mark.parametrize("option,value,message", PUSH_GARBAGE)
def test_push_refuses_bad_metrics_and_constraints_before_any_request(capsys, monkeypatch, option, value, message):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: a request would fail differently
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
    code = main(["push", "alice/x", "--token", "hf_test", "--subnet", "missing.yaml", "--weights", "missing.pth",
                 "--base", "attentive_a6", option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("razorzoo: error: ") and err.count("\n") == 1, err[:300]
    assert message in err and len(err) < 300 and "\x1b" not in err


@pytest.mark.parametrize("escape", ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\u202egnp"])
def test_image_file_names_never_reach_the_terminal_raw(tmp_path, capsys, escape):
    """``razorzoo predict m downloads/*`` prints each file's name: a name is anyone's text."""
    from checkpoints import write_checkpoint

    converted = tmp_path / "spos.safetensors"
    checkpoint = write_checkpoint("spos_0.33M", "mmrazor-subnet", tmp_path / "spos.pth")
    assert main(["convert", str(checkpoint), "--subnet", "spos_0.33M", "-o", str(converted)]) == 0
    image = tmp_path / f"photo{escape}.png"
    image.write_bytes(PHOTO.read_bytes())
    capsys.readouterr()
    assert main(["predict", "spos_0.33M", str(image), "--weights", str(converted), "--topk", "1"]) == 0
    out = capsys.readouterr().out
    assert "photo" in out and ": top 1" in out
    assert not CONTROL.search(out), repr(out)


# --- output paths: `convert -o` never replaces the checkpoint, a directory, a device or a pipe -----------------

@pytest.fixture(scope="module")
def spos_checkpoint(tmp_path_factory):
    from checkpoints import write_checkpoint

    return write_checkpoint("spos_0.33M", "mmrazor-subnet", tmp_path_factory.mktemp("ckpt") / "spos.pth")


CONVERT_OUTPUTS = {  # -o value (relative to a working directory holding spos.pth): expected message
    "the checkpoint itself": ("spos.pth", "is the checkpoint being converted"),
    "a link to the checkpoint": ("link.pth", "is the checkpoint being converted"),
    "the checkpoint through ..": ("sub/../spos.pth", "is the checkpoint being converted"),
    "a directory": ("sub", "is a directory"), "empty": ("", "is empty"),
    "a fifo": ("fifo", "is not a regular file"), "a socket": ("sock", "is not a regular file"),
    "under a file": ("spos.pth/model.safetensors", "cannot be used: Not a directory"),
}


@pytest.mark.parametrize("kind", CONVERT_OUTPUTS)
def test_convert_output_never_replaces_the_checkpoint_or_a_special_file(spos_checkpoint, tmp_path, monkeypatch,
                                                                        capsys, kind):
    output, message = CONVERT_OUTPUTS[kind]
    monkeypatch.chdir(tmp_path)
    Path("spos.pth").write_bytes(spos_checkpoint.read_bytes())
    Path("link.pth").symlink_to("spos.pth")
    Path("sub").mkdir()
    os.mkfifo("fifo")
    listening = socket.socket(socket.AF_UNIX)  # a stand-in for a device: never test this on /dev/null itself
    listening.bind("sock")
    assert main(["convert", "spos.pth", "--subnet", "spos_0.33M", "-o", output]) == 2
    err = capsys.readouterr().err
    assert err.startswith("razorzoo: error: ") and message in err and err.count("\n") == 1, err
    assert Path("spos.pth").read_bytes() == spos_checkpoint.read_bytes()
    assert stat.S_ISFIFO(os.stat("fifo").st_mode) and stat.S_ISSOCK(os.stat("sock").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.pth", "sock", "spos.pth", "sub"]
    listening.close()


@pytest.mark.parametrize("kind", ["directory", "fifo", "socket"])
def test_predict_out_never_replaces_a_special_file(tmp_path, capsys, kind, monkeypatch):
    """``--out DIR`` writes DIR/<image stem>.png; one that is not a regular file is refused before the model loads."""
    out = tmp_path / "out"
    out.mkdir()
    taken = out / f"{PHOTO.stem}.png"
    listening = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(out)  # a socket is bound by its relative name: AF_UNIX paths stop at 108 bytes
    {"directory": taken.mkdir, "fifo": lambda: os.mkfifo(taken), "socket": lambda: listening.bind(taken.name)}[kind]()
    assert main(["predict", "rtmdet_tiny-ofa_lat31", str(PHOTO), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    expected = "is a directory" if kind == "directory" else "exists and is not a regular file"
    assert err.startswith(f"razorzoo: error: --out '{taken}' {expected}") and err.count("\n") == 1, err
    assert [p.name for p in out.iterdir()] == [taken.name] and not taken.is_file()
    listening.close()
