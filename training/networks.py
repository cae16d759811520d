"""The PyTorch networks, on their own: training builds and fits them, export rebuilds them from a checkpoint.

Torch-only (no data loading, no training loop), so export, the benchmark's PyTorch peer and the tests
import a network without importing a whole training script.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DIGIT_CLASSES = 10
SENTIMENT_CLASSES = 3


class DigitNet(nn.Module):
    """Two conv blocks (conv-BN-ReLU x2, max-pool), a dropout MLP embedding, and two heads on it: the digit
    logits, and one "not a digit" logit trained with outlier exposure. Input is raw 0-255 pixels."""

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.3, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.features = nn.Sequential(
            _conv_block(1, width),
            _conv_block(width, width),
            nn.MaxPool2d(2),  # (batch, width, 14, 14)
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 2 * width),
            nn.MaxPool2d(2),  # (batch, 2*width, 7, 7)
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(inplace=True))
        self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, DIGIT_CLASSES))
        self.outlier = nn.Linear(hidden, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 1, 28, 28) float in [0, 255] -> (batch, 10) logits."""
        return self.both(pixels)[0]

    def both(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(digit logits (batch, 10), not-a-digit logit (batch,))."""
        embedding = self.embed(self.features((pixels / 255.0 - self.mean) / self.std))
        return self.classify(embedding), self.outlier(embedding)[:, 0]


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class SentimentNet(nn.Module):
    """Transformer encoder, attention-masked mean pooling, dropout, linear head over the labels."""

    def __init__(self, encoder_path: str, dropout: float = 0.1, pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(encoder_path)
        self.encoder = AutoModel.from_pretrained(encoder_path) if pretrained else AutoModel.from_config(config)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, SENTIMENT_CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq) int64 token ids and mask -> (batch, 3) logits."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


class Denoiser(nn.Module):
    """Pixel-unshuffle to half resolution, concat the noise map, conv stack, predict the noise, subtract."""

    def __init__(self, depth: int = 12, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(5, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 4, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """noisy (B, 1, H, W) in [0, 1], H and W even; sigma (B, 1) on the 0-255 scale -> (B, 1, H, W)."""
        half = F.pixel_unshuffle(noisy, 2)  # (B, 4, H/2, W/2)
        level = (sigma / 255.0).view(-1, 1, 1, 1).expand(-1, 1, half.shape[2], half.shape[3])
        noise = F.pixel_shuffle(self.body(torch.cat([half, level], dim=1)), 2)
        return noisy - noise
