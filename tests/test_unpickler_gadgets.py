"""The allow-list unpickler against hand-crafted gadget pickles: every one is inert or refused, none runs.

Each gadget is a pickle fragment built opcode by opcode (``pickletools`` names in the comments): the shapes an
attacker writes by hand, not only what ``__reduce__`` produces. A gadget "runs" when it creates the marker file. It
is planted where a real checkpoint has room for it (the state dict, its ``_metadata``, ``meta``, nested containers,
a ``HistoryBuffer`` of the message hub, the whole file) and written in both torch formats (zip and legacy).
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from razorzoo.errors import CheckpointError, UnsafeCheckpointError
from razorzoo.weights.checkpoint import ALLOWED_GLOBALS, read_checkpoint

REVIEWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("_codecs", "encode"),  # latin-1 only: how protocol 2 stores bytes
}


def test_the_allow_list_is_exactly_the_reviewed_set():
    assert ALLOWED_GLOBALS == REVIEWED


# --- opcode-level builders: each returns bytes that push exactly one object ----------------------------------------

def s(text: str) -> bytes:
    """BINUNICODE"""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    """GLOBAL"""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    """STACK_GLOBAL"""
    return s(module) + s(name) + b"\x93"


def tup(*items: bytes) -> bytes:
    """MARK ... TUPLE"""
    return b"(" + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:
    """EMPTY_LIST MARK ... APPENDS"""
    return b"](" + b"".join(items) + b"e"


def dct(*pairs: tuple[bytes, bytes]) -> bytes:
    """EMPTY_DICT MARK ... SETITEMS"""
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def call(fn: bytes, *args: bytes) -> bytes:
    """REDUCE"""
    return fn + tup(*args) + b"R"


def gadgets(marker: Path) -> dict[str, bytes]:
    touch, code = s(f"touch {marker}"), s(f"open({str(marker)!r}, 'w').close()")
    import_os = call(glob("builtins", "__import__"), s("os"))
    exec_wrapper = glob("torch.jit.unsupported_tensor_ops", "execWrapper")  # exec(code, glob, loc)
    return {
        "GLOBAL os.system, never called": glob("os", "system"),  # a bare class/function reference
        "REDUCE os.system": call(glob("os", "system"), touch),
        "REDUCE posix.system": call(glob("posix", "system"), touch),
        "STACK_GLOBAL subprocess.check_call": call(stack_glob("subprocess", "check_call"),
                                                   lst(s("touch"), s(str(marker)))),
        "INST os.system": b"(" + touch + b"ios\nsystem\n",
        "OBJ builtins.exec": b"(" + glob("builtins", "exec") + code + b"o",
        "NEWOBJ subprocess.Popen": glob("subprocess", "Popen") + tup(lst(s("touch"), s(str(marker)))) + b"\x81",
        "NEWOBJ_EX subprocess.Popen": glob("subprocess", "Popen") + tup(lst(s("touch"), s(str(marker))))
        + dct((s("shell"), b"\x89")) + b"\x92",
        "REDUCE numpy runstring": call(glob("numpy.testing._private.utils", "runstring"), code, b"}"),
        "REDUCE torch execWrapper": call(exec_wrapper, code, b"}", b"}"),
        # functools.partial() then BUILD (partial.__setstate__) with (func, args, kwds, dict), then call it
        "BUILD functools.partial": call(glob("functools", "partial"), exec_wrapper)
        + tup(exec_wrapper, tup(code, b"}", b"}"), b"}", b"N") + b"b" + b")R",
        "REDUCE functools.partial os.system": call(call(glob("functools", "partial"), glob("os", "system"), touch)),
        "REDUCE operator.methodcaller": call(call(glob("operator", "methodcaller"), s("system"), touch), import_os),
        "REDUCE operator.attrgetter": call(call(call(glob("operator", "attrgetter"), s("system")), import_os), touch),
        "REDUCE builtins.getattr": call(call(glob("builtins", "getattr"), import_os, s("system")), touch),
        "REDUCE builtins.eval": call(glob("builtins", "eval"), code),
        "REDUCE __builtin__.eval": call(glob("__builtin__", "eval"), code),  # Python 2 name, mapped like pickle does
        "REDUCE builtins.exec": call(stack_glob("builtins", "exec"), code),
        "REDUCE codecs.open": call(glob("codecs", "open"), s(str(marker)), s("w")),
        "REDUCE _codecs.encode rot13": call(glob("_codecs", "encode"), s("x"), s("rot13")),
        "REDUCE collections.OrderedDict of eval": call(glob("collections", "OrderedDict"),
                                                       lst(tup(s("k"), call(glob("builtins", "eval"), code)))),
    }


# --- where a gadget sits in a checkpoint -----------------------------------------------------------------------------

def _history_buffer(gadget: bytes) -> bytes:
    """An mmengine HistoryBuffer as the real files pickle it: NEWOBJ, then BUILD with its __dict__."""
    cls = glob("mmengine.logging.history_buffer", "HistoryBuffer")
    return cls + b")\x81" + dct((s("max_length"), b"K\x05"), (s("_log_history"), gadget)) + b"b"


def _checkpoint(state_dict: bytes = b"}", meta: bytes = b"}", hub: bytes = b"}") -> bytes:
    return b"\x80\x02" + dct((s("state_dict"), state_dict), (s("meta"), meta), (s("message_hub"), hub)) + b"."


PLACES = {  # name -> (pickle of the whole file, whether the part is one razorzoo needs)
    "state_dict": (lambda g: _checkpoint(state_dict=dct((s("backbone.w"), g))), True),
    "state_dict._metadata": (lambda g: _checkpoint(
        state_dict=call(glob("collections", "OrderedDict")) + dct((s("_metadata"), g)) + b"b"), True),
    "whole file": (lambda g: b"\x80\x02" + g + b".", True),
    "meta": (lambda g: _checkpoint(meta=dct((s("seed"), g))), False),
    "nested in meta": (lambda g: _checkpoint(meta=dct((s("a"), lst(tup(dct((s("b"), g))))))), False),
    "HistoryBuffer": (lambda g: _checkpoint(hub=dct((s("log_scalars"), dct((s("loss"), _history_buffer(g)))))),
                      False),
}


def _write(payload: bytes, path: Path, legacy: bool) -> Path:
    """A torch file whose object pickle is ``payload``: a real ``torch.save`` file with that pickle swapped in."""
    if legacy:
        buffer = io.BytesIO()
        torch.save({}, buffer, _use_new_zipfile_serialization=False)
        raw = io.BytesIO(buffer.getvalue())
        for _ in range(3):  # magic number, protocol version, sys info
            pickle.load(raw)
        head = raw.tell()
        pickle.load(raw)
        path.write_bytes(buffer.getvalue()[:head] + payload + buffer.getvalue()[raw.tell():])
    else:
        torch.save({}, path)
        with zipfile.ZipFile(path) as archive:
            entries = {name: archive.read(name) for name in archive.namelist()}
        entries[next(name for name in entries if name.endswith("/data.pkl"))] = payload
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
    return path


def test_the_crafted_files_are_real_torch_files(tmp_path):
    """The opcode builders and both containers make files that torch itself reads (so gadgets are not refused
    merely for being malformed)."""
    plain = _checkpoint(state_dict=dct((s("n"), b"K\x07")), meta=dct((s("seed"), b"K\x03")))
    for legacy in (False, True):
        loaded = torch.load(_write(plain, tmp_path / f"{legacy}.pth", legacy), weights_only=False)
        assert loaded == {"state_dict": {"n": 7}, "meta": {"seed": 3}, "message_hub": {}}


def test_the_gadgets_run_under_plain_pickle(tmp_path):
    """The corpus is live: ``pickle.loads`` runs every gadget but the two NEWOBJ shapes (``Popen.__new__`` alone
    starts nothing), the bare reference and the harmless codec call, so "inert" below means the allow-list stopped
    them."""
    marker = tmp_path / "ran"
    ran = set()
    for name, gadget in gadgets(marker).items():
        pickle.loads(b"\x80\x02" + gadget + b".")
        if marker.exists():
            ran.add(name)
            marker.unlink()
    shapes_only = {"NEWOBJ subprocess.Popen", "NEWOBJ_EX subprocess.Popen", "REDUCE _codecs.encode rot13",
                   "GLOBAL os.system, never called"}
    assert ran == set(gadgets(marker)) - shapes_only


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("place", PLACES)
def test_gadgets_are_inert_or_refused(tmp_path, place, legacy):
    marker = tmp_path / "pwned"
    build, needed = PLACES[place]
    problems = []
    for name, gadget in gadgets(marker).items():
        path = _write(build(gadget), tmp_path / "evil.pth", legacy)
        try:
            checkpoint = read_checkpoint(path)
        except UnsafeCheckpointError:
            pass
        except CheckpointError as exc:  # refused before the check: only the allow-listed latin-1 encoder does this
            if name != "REDUCE _codecs.encode rot13" or "_codecs.encode(str, 'rot13') is not allowed" not in str(exc):
                problems.append(f"{name}: {exc}")
        else:
            if needed or checkpoint.state_dict != {} or "seed" in checkpoint.meta:
                problems.append(f"{name}: accepted")
        if marker.exists():
            problems.append(f"{name}: RAN")
            marker.unlink()
    assert problems == []


@pytest.mark.parametrize("encoding", ["latin1", "latin-1"])
def test_protocol_2_bytes_decode(tmp_path, encoding):
    """Protocol 2 stores bytes (numpy array data in real Runner files) as ``_codecs.encode(text, 'latin1')``."""
    payload = _checkpoint(meta=dct((s("blob"), call(glob("_codecs", "encode"), s("\xff\x00"), s(encoding)))))
    for legacy in (False, True):
        assert read_checkpoint(_write(payload, tmp_path / "b.pth", legacy)).state_dict == {}


def test_cyclic_containers_are_walked_once(tmp_path):
    """A list that contains itself (BINPUT, BINGET, APPEND) in the state dict's ``_metadata``: the check ends."""
    cyclic = b"]q\x00h\x00a"
    payload = _checkpoint(state_dict=call(glob("collections", "OrderedDict")) + dct((s("_metadata"), cyclic)) + b"b")
    assert read_checkpoint(_write(payload, tmp_path / "c.pth", legacy=False)).state_dict == {}


def test_refusal_names_the_global_and_where_it_sits(tmp_path):
    nested = dct((s(""), lst(tup(glob("os", "system")))))
    payload = _checkpoint(state_dict=call(glob("collections", "OrderedDict")) + dct((s("_metadata"), nested)) + b"b")
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(_write(payload, tmp_path / "n.pth", legacy=False))
    message = str(info.value)
    assert message.startswith("state_dict.__dict__['_metadata'][''][0][0] references os.system, which is not on")
    assert message.endswith("allow-list of pickle globals; it was not imported or run. Only tensors may appear in a "
                            "state dict: re-export the weights (e.g. torch.save(model.state_dict())) or convert "
                            "them to safetensors with a trusted tool")
    as_key = _checkpoint(state_dict=dct((glob("os", "system"), b"N")))
    with pytest.raises(UnsafeCheckpointError, match=r"^state_dict references os\.system"):
        read_checkpoint(_write(as_key, tmp_path / "k.pth", legacy=False))


def test_python_2_names_are_mapped_like_pickle_does(tmp_path):
    """Protocol-2 files name globals the Python 2 way (``__builtin__.reduce``): refused under the Python 3
    name in a needed part, harmless elsewhere."""
    reference = glob("__builtin__", "reduce")
    with pytest.raises(UnsafeCheckpointError, match=r"functools\.reduce"):
        read_checkpoint(_write(_checkpoint(state_dict=dct((s("w"), reference))), tmp_path / "a.pth", legacy=True))
    assert read_checkpoint(_write(_checkpoint(meta=dct((s("x"), reference))), tmp_path / "b.pth", legacy=True)).meta \
        == {}
