"""seqmodels: fused autoencoders for sequences and images, trained with plain PyTorch.

Ray (distributed training and batch inference) and DVC (pipelines, versioned outputs)
are optional edges: importing this package never imports them.
"""

from seqmodels.errors import SeqmodelsError

__all__ = ["SeqmodelsError"]
__version__ = "0.1.0"
