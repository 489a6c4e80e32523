"""Analysis helpers: FLOP counting (traced and modules-only, plus hand counts), rank measures of
attention, and the pieces of the benchmark tool: the models it compares (``models``), one case
measured in a child process (``bench``), timing on a device (``timing``) and the reports
(``report``)."""
from .flops import (PAPER_COUNTING, TensorForward, attention_product_flops, block_flops,
                    module_flops, traced_flops)

__all__ = ['PAPER_COUNTING', 'TensorForward', 'attention_product_flops', 'block_flops',
           'module_flops', 'traced_flops']
