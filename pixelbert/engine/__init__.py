"""The one training engine shared by pre-training and every fine-tuning task.

hardware (device, precision, kernels) -> optim (SGD CNN + AdamW transformer, schedule)
-> trainer (DeepSpeed step loop) -> checkpoint (atomic save, exact resume) + monitor (TensorBoard).
Import the submodules directly; this package keeps ``import pixelbert.engine`` free of DeepSpeed.
"""
