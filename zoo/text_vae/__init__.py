"""Models of text (Yang et al. 2017): `zoo.lstm_lm`, a language model, and `zoo.text_vae`, a VAE whose decoder
is that language model reading a latent beside every word, an LSTM or a dilated CNN."""

from zoo.text_vae.language_model import LanguageModel, TextConfig
from zoo.text_vae.model import TextVAE, TextVAEConfig

__all__ = ["LanguageModel", "TextConfig", "TextVAE", "TextVAEConfig"]
