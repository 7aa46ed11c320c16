"""nnkit layers: every one is a :class:`nnkit.core.Layer` (an ``init``/``apply`` pair)."""

from nnkit.layers.activation import (
    Activation,
    Elu,
    Gelu,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    Step,
    Tanh,
)
from nnkit.layers.attention import (
    MultiHeadAttention,
    MultiHeadCrossAttention,
    TransformerEncoder,
    TransformerEncoderBlock,
    causal_mask,
)
from nnkit.layers.conv import Conv1D, Conv2D
from nnkit.layers.dense import Dense
from nnkit.layers.dropconnect import DropConnect, ScaledDropout
from nnkit.layers.dropout import Dropout
from nnkit.layers.embedding import Embedding
from nnkit.layers.normalization import BatchNorm, LayerNorm
from nnkit.layers.pooling import (
    AvgPool1D,
    AvgPool2D,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool1D,
    MaxPool2D,
)
from nnkit.layers.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
from nnkit.layers.recurrent import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    Cell,
    GRUCell,
    LSTMCell,
    RNNCell,
    grad_norm_per_timestep,
    run_cell,
)
from nnkit.layers.reshape import Flatten, Reshape

__all__ = [
    "Activation", "Elu", "Gelu", "LeakyRelu", "LogSoftmax", "Relu", "Sigmoid", "Silu",
    "Softmax", "Softplus", "Step", "Tanh", "Dense",
    "Conv1D", "Conv2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool",
    "GlobalMaxPool", "Flatten", "Reshape", "Dropout", "BatchNorm", "LayerNorm", "Embedding",
    "DropConnect", "ScaledDropout",
    "RNNCell", "LSTMCell", "GRUCell", "Cell", "run_cell", "RNN", "LSTM", "GRU", "Bidirectional",
    "grad_norm_per_timestep", "causal_mask", "MultiHeadAttention",
    "MultiHeadCrossAttention", "TransformerEncoderBlock", "TransformerEncoder",
    "sinusoidal_encoding", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
]
