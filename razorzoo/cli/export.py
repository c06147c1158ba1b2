"""``razorzoo export``: write a model as a self-describing ONNX file, after the parity gate.

Torch is imported only inside the handler (``razorzoo list`` builds this parser too).
"""
from __future__ import annotations

import argparse

from razorzoo.cli import CLIError
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
    int8 = p.add_argument_group("int8 (OpenVINO, NNCF post-training quantization: pip install 'razorzoo[int8]')")
    int8.add_argument("--int8", action="store_true",
                      help="quantize to int8 for OpenVINO; -o must then name an OpenVINO IR FILE.xml (its .bin is "
                           "written beside it); the cost against float32 is always printed")
    int8.add_argument("--calib", nargs="+", metavar="DIR|IMAGE",
                      help="calibration images: a folder, or image files (a few hundred like the deployment's)")
    int8.add_argument("--calib-n", type=int, default=300, metavar="N",
                      help="calibrate with the first N images (default 300); up to 100 more measure the cost")
    int8.add_argument("--coco-ann", metavar="JSON", help="also measure box AP of float32 and int8 on this COCO "
                                                          "annotation file (with --images)")
    int8.add_argument("--images", metavar="DIR", help="with --coco-ann: the folder of its images")
    int8.add_argument("--imagenet", metavar="DIR", help="also measure top-1 of float32 and int8 on this ImageNet-style "
                                                        "folder (classifiers)")
    int8.add_argument("--limit", type=int, metavar="N", help="with --coco-ann/--imagenet: the first N images only")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from razorzoo.cli.predict import MODEL_KINDS, model_task
    from razorzoo.files import check_output_file
    from razorzoo.loading import export
    from razorzoo.progress import step

    check_output_file(args.output, what="-o", inputs=[args.name])  # before the input is even read
    held = model_task(args.name)
    if args.task is not None and args.task not in (held, "backbone"):
        raise CLIError(f"{args.name} is a {MODEL_KINDS.get(held, held)}: export it with --task {held} (or --task "
                       "backbone for its backbone)")
    measured = [flag for flag, value in (("--coco-ann", args.coco_ann), ("--imagenet", args.imagenet)) if value]
    if not args.int8 and (args.calib or measured):
        raise CLIError(f"{', '.join(['--calib'] * bool(args.calib) + measured)} are for --int8 exports")
    if args.coco_ann and not args.images:
        raise CLIError("--coco-ann needs --images DIR, the folder of its images")
    calib = args.calib
    if calib is not None and len(calib) == 1 and Path(calib[0]).is_dir():
        calib = calib[0]  # a folder: its images, sorted by name

    gate = " and checking parity on ONNX Runtime" if args.check else ""
    quantize = " and quantizing to int8" if args.int8 else ""
    with step(f"exporting {args.name} to ONNX{gate}{quantize} (tens of seconds)"):
        result = export(args.name, args.output, task=args.task, variant=args.variant, opset=args.opset,
                        dynamic_batch=not args.static_batch, fp16=args.fp16, input_size=args.input_size,
                        simplify=args.simplify, check=args.check, images=args.image,
                        min_agreement=args.min_agreement, int8=args.int8, calib=calib, calib_n=args.calib_n)
    size = result.path.stat().st_size + (result.path.with_suffix(".bin").stat().st_size if args.int8 else 0)
    print(f"wrote {result.path} ({size / 1e6:.1f} MB)")
    if result.parity is not None:
        print(f"parity with eager on onnxruntime: {result.parity}")
    if result.int8_cost is not None:
        print(f"int8 cost: {result.int8_cost}")
    if measured:
        _accuracy(args, result.path)
    return 0


def _accuracy(args: argparse.Namespace, exported: object) -> None:
    """float32 (eager) and int8 on the same COCO or ImageNet images: what quantization costs in AP or top-1."""
    import razorzoo
    from razorzoo.cli.val import percent

    loaders = {True: razorzoo.load_classifier, False: razorzoo.load_detector}
    classify = args.imagenet is not None
    models = {"float32": loaders[classify](args.name),
              "int8": loaders[classify](exported, backend="openvino")}
    for precision, model in models.items():
        if classify:
            from razorzoo.evaluation.imagenet import evaluate_imagenet

            result = evaluate_imagenet(model, args.imagenet, limit=args.limit)
            line = f"top-1 {percent(result.top1)}, top-5 {percent(result.top5)}"
        else:
            from razorzoo.evaluation.coco import evaluate_coco

            result = evaluate_coco(model, args.coco_ann, args.images, limit=args.limit)
            line = f"box AP {percent(result.stats['AP'])}, AP50 {percent(result.stats['AP50'])}"
        print(f"{precision:<8} {line} on {result.num_images} images")
