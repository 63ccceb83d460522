"""Float vs int8 accuracy of the zoo's digits CNN on the held-out split.

Prints the float accuracy, torch.ao FX post-training quantization (fbgemm and qnnpack), eager-mode
PTQ and FX quantization-aware fine-tuning, each with its difference to float.

    python scripts/digits_accuracy.py [--retrain] [--qat-epochs 3] [--qat-lr 1e-3]
"""

from __future__ import annotations

import argparse
import time

import torch

from zynqnn import zoo
from zynqnn.zoo import digits
from zynqnn.zoo.quant import quiet_torch_ao


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="ignore the cached float weights")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train split)")
    parser.add_argument("--qat-epochs", type=int, default=3, help="~1/10 of the float epochs")
    parser.add_argument("--qat-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = digits.load_data()
    model = digits.pretrained(retrain=args.retrain)
    float_acc = digits.accuracy(model, x_te, y_te)
    calib = x_tr[: args.calib]
    print(f"digits CNN, held-out split: {len(y_te)} images ({len(y_tr)} for training)")
    print(f"{'float32':<28} {float_acc:6.2f} %")

    def report(label: str, qmodel: torch.nn.Module) -> None:
        acc = digits.accuracy(qmodel, x_te, y_te)
        print(f"{label:<28} {acc:6.2f} %   ({acc - float_acc:+.2f})")

    for engine in zoo.ENGINES:
        report(f"int8 PTQ FX ({engine})", zoo.quantize_fx(model, x_tr[:1], engine, calib))
    for engine in zoo.ENGINES:
        report(f"int8 PTQ eager ({engine})", digits.quantize_eager(model, calib, engine))
    for engine in zoo.ENGINES:
        qat = zoo.qat_finetune(model, (x_tr, y_tr), engine, epochs=args.qat_epochs, lr=args.qat_lr)
        report(f"int8 QAT FX ({engine})", qat)
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    with quiet_torch_ao():
        raise SystemExit(main())
