"""Adversarial Variational Bayes: `zoo.avb` (Mescheder, Nowozin & Geiger 2017)."""

from zoo.avb.model import AVB, AVBConfig, build

__all__ = ["AVB", "AVBConfig", "build"]
