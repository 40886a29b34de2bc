"""A toy transformers model whose attention does not go through the interface (for the refusal test)."""
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class ToyConfig(PretrainedConfig):
    model_type = "attnlab-toy"


class ToyAttention(nn.Module):
    def forward(self, x):
        return torch.softmax(x @ x.transpose(-1, -2), -1) @ x


class ToyModel(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.attn = ToyAttention()

    def forward(self, x):
        return self.attn(x)
