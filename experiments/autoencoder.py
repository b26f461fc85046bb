"""Autoencoder + GMM on its codes. ``python -m experiments.autoencoder --flagfile=experiments/configs/ae_mnist.flags``."""
from absl import flags

from experiments import common
from experiments import train_flags
from unsupervised_jax import experiment
from unsupervised_jax.methods import autoencoder

flags.DEFINE_enum('architecture', 'mlp', ['mlp', 'conv'], 'Autoencoder architecture.')
flags.DEFINE_list('hidden', ['128'], 'MLP hidden widths (encoder; the decoder mirrors them).')
flags.DEFINE_integer('latent_dim', 12, 'Code size.')
flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate.')
flags.DEFINE_float('noise_std', 0.0, 'Input noise of a denoising autoencoder; 0 = plain.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  ae_config = autoencoder.AEConfig(architecture=FLAGS.architecture, hidden=tuple(int(h) for h in FLAGS.hidden),
                                   latent_dim=FLAGS.latent_dim, learning_rate=FLAGS.learning_rate,
                                   noise_std=FLAGS.noise_std)
  ae_config.validate()  # before any file is written
  experiment.run_learned(train_flags.run_config('autoencoder'),
                         lambda image_shape: autoencoder.Autoencoder(ae_config, image_shape))


if __name__ == '__main__':
  common.run(main)
