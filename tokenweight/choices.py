"""The core's string-valued options, in a module without torch, so that configs and ``--help`` read
them without importing torch (the core validates with these; the stage configs offer them).
"""

#: per-token NLL of the output layer: ``chunked`` (:func:`tokenweight.loss.chunked_nll`, any device)
#: or ``cce`` (Cut-Cross-Entropy's Triton kernel, :mod:`tokenweight.loss_kernels`: CUDA, 16-bit)
LOSS_KERNELS = ("chunked", "cce")
#: the unit of the weights' normalisation (``weight_norm``): a row, or each document of a packed row
WEIGHT_NORMS = ("sequence", "document")
#: default positions per output-layer chunk of the loss, for the library and the stages' ``--chunk-size``.
#: The peak is one float32 ``[chunk, V]`` buffer plus the gradients (weight ``[V, d]`` float32, hidden
#: ``[n, d]``); smaller chunks mean a lower peak but smaller GEMMs and one more pass over the ``[V, d]``
#: weight-gradient accumulator each: the trade-off measured in benchmarks/RESULTS.md chose this value.
DEFAULT_CHUNK_SIZE = 384
