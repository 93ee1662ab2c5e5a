"""A pure-PyTorch stand-in for the three CUDA kernels that Hugging Face's MRA calls (`index_max`,
`mm_to_sparse`, `sparse_dense_mm`), written from the semantics of transformers/kernels/mra/cuda_kernel.cu and
cuda_launch.cu, so that the HF reference runs on a CPU.

Layouts are the kernels' own:
- dense operands are tiles [batch, num_blocks, dim, 32] (a block of 32 positions, transposed);
- a sparse block is [32 (key / column position), 32 (query / row position)];
- `indices` [batch, num_selected] hold row_block * num_col_blocks + col_block.

`index_max` keeps the kernel's quirk of taking the maximum on values truncated to 1e-3 (it runs an integer
atomicMax on `(int)(x * 1000)`), with -1e5 for query rows without a selected block. The other two are exact.
(The CUDA `sparse_dense_mm` also assumes dim to be a multiple of 64; the stand-in computes the intended product
for any dim.)

    from tests.parity.mra.hf_kernels import install
    install()   # modeling_mra.mra_cuda_kernel = TorchMraKernels()
"""
import torch


class TorchMraKernels:
    """The object HF's modeling_mra expects in its module global `mra_cuda_kernel`."""

    @staticmethod
    def index_max(index_vals, indices, a_num_block, b_num_block):
        # index_vals [batch, 32, num_selected]: per selected block, the max over its 32 keys for each query row.
        batch, _, num_selected = index_vals.shape
        rows = torch.div(indices.long(), b_num_block, rounding_mode="floor")  # [batch, num_selected]
        quantized = (index_vals * 1000).to(torch.int32)  # C's (int) cast: truncation toward zero
        targets = rows[:, None, :] * 32 + torch.arange(32, device=indices.device)[None, :, None]
        buffer = torch.full((batch, a_num_block * 32), -100000000, dtype=torch.int32, device=index_vals.device)
        buffer = buffer.scatter_reduce(1, targets.reshape(batch, -1), quantized.reshape(batch, -1), reduce="amax",
                                       include_self=True)
        max_vals = (buffer.double() / 1000.0).float()
        max_vals_scatter = torch.gather(max_vals, 1, targets.reshape(batch, -1)).reshape(batch, 32, num_selected)
        return max_vals, max_vals_scatter

    @staticmethod
    def mm_to_sparse(dense_a, dense_b, indices):
        # dense_a [batch, a_blocks, dim, 32], dense_b [batch, b_blocks, dim, 32] -> [batch, num_selected, 32, 32]
        b_num_block = dense_b.shape[1]
        indices = indices.long()
        rows = torch.div(indices, b_num_block, rounding_mode="floor")
        cols = indices % b_num_block
        a = _gather_blocks(dense_a, rows)
        b = _gather_blocks(dense_b, cols)
        return torch.einsum("bsdi,bsdj->bsji", a, b)  # [key j, query i]

    @staticmethod
    def sparse_dense_mm(sparse_a, indices, dense_b, a_num_block):
        # sparse_a [batch, num_selected, 32 (key), 32 (query)], dense_b [batch, b_blocks, dim, 32]
        # -> dense_c [batch, a_num_block, dim, 32]: C[row block] += B[col block] @ A
        batch, _, dim, _ = dense_b.shape
        b_num_block = dense_b.shape[1]
        indices = indices.long()
        rows = torch.div(indices, b_num_block, rounding_mode="floor")
        cols = indices % b_num_block
        b = _gather_blocks(dense_b, cols)                         # [batch, s, dim, 32 (key)]
        products = torch.einsum("bsdk,bskq->bsdq", b, sparse_a)   # [batch, s, dim, 32 (query)]
        out = torch.zeros(batch * a_num_block, dim, 32, dtype=sparse_a.dtype, device=sparse_a.device)
        flat_rows = (rows + torch.arange(batch, device=rows.device)[:, None] * a_num_block).reshape(-1)
        out.index_add_(0, flat_rows, products.reshape(-1, dim, 32))
        return out.reshape(batch, a_num_block, dim, 32)


def _gather_blocks(tiles, block_ids):
    """tiles [batch, num_blocks, dim, 32], block_ids [batch, num_selected] -> [batch, num_selected, dim, 32]."""
    batch, num_blocks, dim, width = tiles.shape
    flat = (block_ids + torch.arange(batch, device=block_ids.device)[:, None] * num_blocks).reshape(-1)
    return tiles.reshape(batch * num_blocks, dim, width).index_select(0, flat).reshape(batch, -1, dim, width)


def install(module=None):
    """Put the stand-in where modeling_mra looks for its CUDA extension; returns the previous value."""
    if module is None:
        from transformers.models.mra import modeling_mra as module
    previous = module.mra_cuda_kernel
    module.mra_cuda_kernel = TorchMraKernels()
    return previous
