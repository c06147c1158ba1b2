"""``razorzoo export``: write a model as a self-describing ONNX file, after the parity gate.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse

from razorzoo.constants import docs_url


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX (for ONNX Runtime, OpenVINO, ...)",
        description="Export a model to one .onnx file whose metadata carries its recipe (pre-processing, class "
                    "names, test_cfg), so `razorzoo predict FILE.onnx --backend ...` and load_detector(FILE.onnx, "
                    "backend=...) need nothing else. The parity gate (on by default) runs the eager model and ONNX "
                    "Runtime on sample images and refuses to write a file that does not reproduce it.",
    )
    p.add_argument("name", metavar="NAME", help="registry name or alias, hf-hub:org/name[@rev], or a converted "
                                                ".safetensors file")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="where to write the .onnx file")
    p.add_argument("--task", choices=("detection", "classification", "backbone"), help="what to export (default: the model's own task; 'backbone' "
                                                  "exports the backbone of a detector or classifier)")
    p.add_argument("--variant", default="raw", choices=("raw", "decoded", "nms"),
                   help="detector outputs: raw = the head outputs per level (NMS runs outside the graph, exactly "
                        "as in eager predict); decoded = boxes and per-class scores for all priors; nms = decoding "
                        "and NMS in the graph, outputs num_dets, boxes, scores, labels "
                        f"({docs_url('deploy.md')})")
    p.add_argument("--min-agreement", type=float, default=1.0, metavar="F",
                   help="share of eager's detections the gate requires (default 1.0)")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: torch's)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1 (default: dynamic)")
    p.add_argument("--fp16", action="store_true", help="store float16 weights (inputs and outputs stay float32)")
    p.add_argument("--input-size", type=int, metavar="N", help="classifiers/backbones: the N x N input size")
    p.add_argument("--simplify", action="store_true", help="run the ONNX graph optimizer once more")
    p.add_argument("--image", action="append", default=[], metavar="IMAGE",
                   help="also compare detections on this image in the parity gate (repeatable)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the ONNX checker and the parity gate")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from razorzoo.cli import CLIError
    from razorzoo.cli.predict import MODEL_KINDS, model_task
    from razorzoo.loading import export
    from razorzoo.progress import step

    held = model_task(args.name)
    if args.task is not None and args.task not in (held, "backbone"):
        raise CLIError(f"{args.name} is a {MODEL_KINDS.get(held, held)}: export it with --task {held} (or --task "
                       "backbone for its backbone)")

    gate = " and checking parity on ONNX Runtime" if args.check else ""
    with step(f"exporting {args.name} to ONNX{gate} (tens of seconds)"):
        result = export(args.name, args.output, task=args.task, variant=args.variant, opset=args.opset,
                        dynamic_batch=not args.static_batch, fp16=args.fp16, input_size=args.input_size,
                        simplify=args.simplify, check=args.check, images=args.image,
                        min_agreement=args.min_agreement)
    size = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({size:.1f} MB)")
    if result.parity is not None:
        print(f"parity with eager on onnxruntime: {result.parity}")
    return 0
