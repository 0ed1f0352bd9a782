"""Writes the `.keras` files the contract suite reloads, one tiny model per registry entry.

The committed files were written at commit 7b795d6, before the zoo became a package per
family, so that files saved by that main provably still load (tests/contract):

    git checkout 7b795d6 && python tests/contract/legacy/make_files.py tests/contract/legacy
"""

import sys

import keras
import numpy as np
import tensorflow as tf

import zoo

SEEDS = np.array([3, 141, -7], np.int64)
TINY = {  # the overrides in force at 7b795d6 (the registry did not hold them yet)
    "zoo.vae": dict(hidden_units=(16,), latent_units=(4,), image_shape=(6, 6, 1)),
    "zoo.iwae": dict(hidden_units=(16,), latent_units=(4,), image_shape=(6, 6, 1), k=2),
    **{name: dict(generator_units=16, discriminator_units=8, maxout_pieces=2, filters=4, noise_dim=6,
                  minibatch_kernels=3, minibatch_kernel_dim=2, image_shape=(8, 8, 1))
       for name in ("zoo.gan", "zoo.dcgan", "zoo.wgan_gp", "zoo.wgan", "zoo.cgan", "zoo.infogan", "zoo.ebgan")},
    "zoo.pixelcnn": dict(image_shape=(5, 5, 1), filters=4, layers=2, output_filters=8),
    "zoo.gated_pixelcnn": dict(image_shape=(5, 5, 1), filters=4, layers=2, output_filters=8),
    "zoo.pixelcnn_pp": dict(image_shape=(4, 4, 1), filters=4, resnet_blocks=1, num_mixtures=2),
    "zoo.pixelrnn": dict(image_shape=(5, 5, 1), filters=4, layers=1, output_filters=8, first_kernel_size=3),
}


def main(directory: str) -> None:
    expected = {}
    for name, overrides in TINY.items():
        spec = zoo.get(name)
        model = spec.build(spec.make_config(**overrides))
        model.save(f"{directory}/{spec.short_name}.keras")
        expected[spec.short_name] = keras.ops.convert_to_numpy(model.sample(tf.constant(SEEDS)))
    np.savez(f"{directory}/samples.npz", seeds=SEEDS, **expected)


if __name__ == "__main__":
    main(sys.argv[1])
