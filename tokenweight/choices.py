"""The core's string-valued options, in a module without torch, so that configs and ``--help`` read
them without importing torch (the core validates with these; the stage configs offer them).
"""

#: per-token NLL of the output layer: ``chunked`` (:func:`tokenweight.loss.chunked_nll`, any device)
#: or ``cce`` (Cut-Cross-Entropy's Triton kernel, :mod:`tokenweight.loss_kernels`: CUDA, 16-bit)
LOSS_KERNELS = ("chunked", "cce")
#: the unit of the weights' normalisation (``weight_norm``): a row, or each document of a packed row
WEIGHT_NORMS = ("sequence", "document")
