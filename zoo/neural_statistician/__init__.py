"""The Neural Statistician (Edwards & Storkey 2017): `zoo.neural_statistician` (sets of MNIST digits),
`zoo.neural_statistician_omniglot` (Sec. 5.3, for users with internet), `zoo.neural_statistician_synthetic`
(Sec. 5.1) and `zoo.neural_statistician_spatial` (Sec. 5.2)."""

from zoo.neural_statistician.model import NeuralStatistician, NeuralStatisticianConfig, build

__all__ = ["NeuralStatistician", "NeuralStatisticianConfig", "build"]
