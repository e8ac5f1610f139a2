"""Tests for medmae_nb.models.decoders: MAE's decoder against a token-by-token reference (where each visible token and
each mask token lands, which position row it gets, which tokens the head predicts), the sin-cos table, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medmae_nb.masking import gather_tokens, random_masking
from medmae_nb.models.decoders import MAEDecoder, sincos_pos_embed, vit_norm_layer
from medmae_nb.models.mae import MaskedAutoencoderViT

GRID = (3, 4)  # not square: a row/column mix-up changes the token order
L = GRID[0] * GRID[1]


def small_decoder(embed_dim: int = 8, dim: int = 8, depth: int = 1, out_dim: int = 5) -> MAEDecoder:
    torch.manual_seed(0)
    dec = MAEDecoder(GRID, embed_dim, dim, depth, num_heads=2, out_dim=out_dim)
    nn.init.normal_(dec.mask_token, std=1.0)  # zeros at construction: a mask token must be told from a zero token
    return dec.eval()


def reference_sequence(dec: MAEDecoder, latent: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """MAE's un-shuffle written out: ``(N, 1 + L, D)``, CLS first, visible token ``k`` of sample ``n`` at image
    position ``keep_idx[n, k]``, the mask token everywhere else, plus the position row ``1 + position``."""
    emb = dec.embed(latent)
    n, dim = emb.shape[0], emb.shape[-1]
    seq = torch.empty(n, 1 + L, dim)
    for i in range(n):
        seq[i, 0] = emb[i, 0]
        for pos in range(L):
            seq[i, 1 + pos] = dec.mask_token[0, 0]
        for k, pos in enumerate(keep_idx[i].tolist()):
            seq[i, 1 + pos] = emb[i, 1 + k]
    return seq + dec.pos_embed


def reference_decoder(dec: MAEDecoder, latent: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """``(N, L, out_dim)`` in image order: the reference sequence through the blocks, the norm and the head."""
    x = reference_sequence(dec, latent, keep_idx)
    for block in dec.blocks:
        x = block(x)
    return dec.pred(dec.norm(x)[:, 1:])


# ------------------------------------------------------------------------------------------ token order
def test_the_decoder_output_equals_the_token_by_token_reference():
    dec = small_decoder()
    info = random_masking(3, L, 0.75, generator=torch.Generator().manual_seed(4))
    latent = torch.randn(3, 1 + info.len_keep, 8)
    with torch.no_grad():
        full = dec(latent, info.restore)
        reference = reference_decoder(dec, latent, info.keep_idx)
        assert full.shape == (3, L, 5)
        torch.testing.assert_close(full, reference, atol=1e-5, rtol=1e-5)
        # the head on the hidden tokens only, in hidden_idx order (what the loss compares with the target patches)
        torch.testing.assert_close(dec(latent, info.restore, info.hidden_idx),
                                   torch.stack([reference[i, info.hidden_idx[i]] for i in range(3)]),
                                   atol=1e-5, rtol=1e-5)
        # every token present (restore None): the latent is already in image order
        every = torch.randn(3, 1 + L, 8)
        torch.testing.assert_close(dec(every), reference_decoder(dec, every, torch.arange(L).expand(3, -1)),
                                   atol=1e-5, rtol=1e-5)


def test_fill_equals_the_reference_gather_with_restore():
    # MaskInfo.restore indexes cat(visible tokens, mask tokens); gather with it puts everything in image order
    dec = small_decoder()
    info = random_masking(2, L, 0.5, generator=torch.Generator().manual_seed(1))
    emb = torch.randn(2, 1 + info.len_keep, 8)
    shuffled = torch.cat([emb[:, 1:], dec.mask_token.expand(2, L - info.len_keep, -1)], dim=1)
    expected = torch.stack([shuffled[i, info.restore[i]] for i in range(2)])
    with torch.no_grad():
        filled = dec.fill(emb, info.restore)
    assert torch.equal(filled[:, 0], emb[:, 0]) and torch.equal(filled[:, 1:], expected)
    assert dec.fill(emb, None) is emb  # nothing to fill when every token is there


def transparent_decoder(dim: int = 4) -> MAEDecoder:
    """A decoder whose embedding, norm and head are the identity and that has no blocks: its output at token ``i``
    is the token put in slot ``i`` plus position row ``1 + i``, so the output shows where each token went."""
    dec = MAEDecoder(GRID, dim, dim, depth=0, num_heads=1, out_dim=dim)
    with torch.no_grad():
        dec.embed.weight.copy_(torch.eye(dim))
        dec.embed.bias.zero_()
        dec.pred.weight.copy_(torch.eye(dim))
        dec.pred.bias.zero_()
        dec.mask_token.fill_(-1.0)
    dec.norm = nn.Identity()
    return dec.eval()


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_each_visible_token_lands_at_its_own_image_position_and_each_mask_token_at_a_hidden_one(ratio):
    dec = transparent_decoder()
    info = random_masking(4, L, ratio, generator=torch.Generator().manual_seed(7))
    latent = torch.zeros(4, 1 + info.len_keep, 4)
    latent[:, 0] = 100.0  # the CLS token: must never show up among the patch tokens
    latent[:, 1:, 0] = info.keep_idx.float()  # each visible token carries its own image position
    latent[:, 1:, 1] = 1.0
    with torch.no_grad():
        out = dec(latent, info.restore) - dec.pos_embed[:, 1:]  # take away each slot's own position row
    positions = torch.arange(L, dtype=torch.float32).expand(4, -1)
    hidden = info.mask.bool()
    expected = torch.where(hidden, torch.full_like(positions, -1.0), positions)
    torch.testing.assert_close(out[..., 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 1], torch.where(hidden, -1.0, 1.0), atol=1e-5, rtol=0)
    # the hidden tokens predicted alone come in hidden_idx order, each one a mask token at its own position
    with torch.no_grad():
        picked = dec(latent, info.restore, info.hidden_idx) - gather_tokens(dec.pos_embed[:, 1:].expand(4, -1, -1),
                                                                            info.hidden_idx)
    torch.testing.assert_close(picked, torch.full_like(picked, -1.0), atol=1e-5, rtol=0)


def test_position_row_1_plus_i_goes_to_token_i_and_row_0_to_cls():
    dec = transparent_decoder()
    with torch.no_grad():
        out = dec(torch.zeros(1, 1 + L, 4))  # every token zero: the output is the position table itself
    torch.testing.assert_close(out[0], sincos_pos_embed(4, *GRID)[1:], atol=1e-6, rtol=0)
    assert torch.all(dec.pos_embed[0, 0] == 0)


def test_the_mae_model_decodes_through_the_same_un_shuffle():
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(img_size=(24, 32), patch_size=8, embed_dim=16, depth=1, num_heads=2,
                                 decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2).eval()
    assert model.grid_size == GRID and model.decoder.grid_size == GRID
    nn.init.normal_(model.decoder.mask_token, std=1.0)
    x = torch.rand(2, 1, 24, 32)
    info = random_masking(2, L, 0.75, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        latent = model.forward_encoder(x, info)
        reference = reference_decoder(model.decoder, latent, info.keep_idx)
        torch.testing.assert_close(model.forward_decoder(latent, info.restore), reference, atol=1e-5, rtol=1e-5)
        out = model(x, mask_info=info)  # the training forward: hidden patches in hidden_idx order
    torch.testing.assert_close(out.pred, torch.stack([reference[i, info.hidden_idx[i]] for i in range(2)]),
                               atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ parts and errors
def test_decoder_parts_and_sizes():
    dec = MAEDecoder((2, 2), embed_dim=12, decoder_embed_dim=8, depth=3, num_heads=2, out_dim=48, mlp_ratio=2.0)
    assert dec.num_tokens == 4 and dec.grid_size == (2, 2) and len(dec.blocks) == 3
    assert (dec.embed.in_features, dec.embed.out_features) == (12, 8) and dec.pred.out_features == 48
    assert dec.blocks[0].mlp.fc1.out_features == 16
    assert dec.pos_embed.shape == (1, 5, 8) and "pos_embed" not in dict(dec.named_parameters())
    assert torch.equal(dec.pos_embed[0], sincos_pos_embed(8, 2, 2))
    assert isinstance(dec.norm, type(vit_norm_layer(8))) and dec.norm.eps == 1e-6


@pytest.mark.parametrize("dim, heads", [(6, 2), (12, 5)])
def test_a_width_that_the_table_or_the_heads_cannot_split_is_refused(dim, heads):
    with pytest.raises(ValueError, match=rf"decoder_embed_dim \({dim}\) must be a multiple of 4 .*\({heads}\)"):
        MAEDecoder((2, 2), 8, dim, 1, heads, 16)


def test_sincos_rows_are_row_major_and_the_column_half_comes_first():
    emb = sincos_pos_embed(8, 2, 3, cls_token=False)
    omega = 1.0 / 10000.0 ** (torch.arange(2, dtype=torch.float64) / 2.0)
    for token in range(6):
        row, col = divmod(token, 3)
        expected = torch.cat([torch.sin(col * omega), torch.cos(col * omega),
                              torch.sin(row * omega), torch.cos(row * omega)]).float()
        torch.testing.assert_close(emb[token], expected, atol=1e-6, rtol=0)
