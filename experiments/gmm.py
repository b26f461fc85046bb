"""GMM (EM) on pixels or their PCA. ``python -m experiments.gmm [--flagfile=experiments/configs/gmm_mnist.flags]``."""
from absl import flags

from experiments import common
from unsupervised_jax import experiment
from unsupervised_jax.clustering import gmm

flags.DEFINE_integer('n_clusters', 0, 'Number of components; 0 = number of classes of the data set.', lower_bound=0)
flags.DEFINE_enum('covariance_type', 'full', list(gmm.COVARIANCE_TYPES), 'Covariance parametrisation.')
flags.DEFINE_float('reg_covar', 1e-6, 'Added to covariance diagonals.', lower_bound=0.0)
flags.DEFINE_integer('n_init', 1, 'K-means-initialised EM restarts; the highest likelihood is kept.', lower_bound=1)
flags.DEFINE_integer('max_iter', 100, 'EM iteration cap.', lower_bound=1)
flags.DEFINE_float('tol', 1e-3, 'Stop when the mean log-likelihood changes by less.', lower_bound=0.0)
flags.DEFINE_integer('pca_dim', 0, 'Fit on the first pca_dim principal components; 0 = raw pixels.', lower_bound=0)
flags.DEFINE_bool('pca_whiten', False, 'Scale the principal components to unit variance.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  experiment.run_pixel_clustering(experiment.PixelClusteringConfig(
      method='gmm', dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, protocol=FLAGS.protocol,
      n_clusters=FLAGS.n_clusters, pca_dim=FLAGS.pca_dim, pca_whiten=FLAGS.pca_whiten,
      seeds=common.seeds(), workdir=FLAGS.workdir, results_dir=FLAGS.results_dir, results_name=FLAGS.results_name,
      options={'covariance_type': FLAGS.covariance_type, 'reg_covar': FLAGS.reg_covar,
               'n_init': FLAGS.n_init, 'max_iter': FLAGS.max_iter, 'tol': FLAGS.tol}))


if __name__ == '__main__':
  common.run(main)
