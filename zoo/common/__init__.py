"""What every family of the zoo shares: bounds, distribution layers, stateless noise,
serving-signature helpers, metrics and the pieces of the model contract written once."""
