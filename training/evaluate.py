"""python -m training.evaluate WORKDIR: test-set metrics of a trained run as one JSON line.

    python -m training.evaluate runs/iwae --k 5000
    {"model": "zoo.iwae", "split": "test", "k": 5000, "examples": 10000, "epochs": 3280,
     "nll": 84.8, "elbo": -86.1, "active_units": [25], ...}

What is measured is what the model's registry entry declares (`ModelSpec.evaluation`):

* "likelihood": the model's test metrics with k importance samples. `nll` is −L_k
  (Burda et al. 2016 report k = 5000); `elbo` is the mean log-weight over the same
  samples. Metrics that the model reports per stochastic layer (`active_units_1`,
  `active_units_2`, …) are listed together (`active_units`).
* "exact_likelihood": the model's test metrics as they are (no k): models with a
  tractable likelihood (zoo.pixelcnn) report `nll`, the exact −log p(x) in nats per
  image, and `bits_per_dim`, nll / (H·W·C · ln 2).
* "caption_accuracy" (models drawn from MNIST captions): for each caption of the split
  and of its held-out companion (captions never trained on), an image drawn with seed i
  for caption i; the zoo's MNIST classifier reads the 28×28 window where the caption
  places each digit (`training.captions.fraction_read`): `caption_accuracy_held_in`,
  `caption_accuracy_held_out`, beside `caption_accuracy_real` (the same reading of the
  real canvases: the ceiling) and `classifier_accuracy`.
* "ais" (models with a prior and decoder density, `zoo.contract.DecoderDensity`): with
  `--ais_steps M`, log p(x) of every image by annealed importance sampling (Neal 2001; Wu
  et al. 2017) with `--ais_chains` chains from the prior, M HMC transitions each
  (`zoo.common.ais`): `ais_nll` (−mean log p̂(x)) and `ais_standard_error` (of that mean,
  over the chains), beside the likelihood metrics; then, as a check, bidirectional Monte
  Carlo on `--bdmc_examples` examples simulated from the model: `bdmc_forward` ≤ log p(x) ≤
  `bdmc_reverse` (means; stochastic bounds) and `bdmc_gap`, their difference. Models whose decoder
  density is a Gaussian around a generator (GANs, `zoo.contract.ObservationNoise`) report its σ,
  `ais_observation_stddev`, which `--ais_observation_stddev` sets (Wu et al. 2017 choose it on
  validation data).
* "conditional_ais" (models of an output y given an input x, `zoo.contract.ConditionalDecoderDensity`):
  the same for log p(y | x) = log ∫ p(z | x) p(y | x, z) dz, chains starting from the prior
  p(z | x), under each of the model's conditions (zoo.cvae: `ais_nll_given` lists 1, 2 and 3
  known quadrants, beside its `nll_given`); the bidirectional check simulates y for the first
  `--bdmc_examples` examples of the split and keeps their x.
* "sample_quality": the model's test metrics (no k), then the quality of
  `model.sample` on the seeds 0, …, N − 1 against the split's real images: `fid`,
  `classifier_score`, `modes_covered`, `class_kl`, beside `fid_floor` (the FID
  between the two halves of the real images) and `classifier_accuracy`; see
  training.sample_quality and docs/evaluation.md. `--sample_quality` adds these
  for any model.
* "feature_1nn" (models with an encoder, `zoo.contract.EncoderFeatures`): each image of the
  split is labelled by its nearest train image in the model's feature space:
  `nearest_neighbour_accuracy` (cosine distance) and `nearest_neighbour_accuracy_euclidean`
  (the BiGAN authors' script's), the fractions labelled right (Donahue et al. 2017, Table 1),
  and `nearest_neighbour_references`, the train images searched (the first
  `--max_examples` of them with that flag); see training.nearest_neighbour.

* "few_shot" (models of sets, `zoo.contract.SetContext`): K-way N-shot classification of the
  split's classes (held out from training) by the KL between context posteriors, 100 episodes
  (`--episodes`) per setting of Edwards & Storkey 2017, Table 1 (5 and 20 ways where the split has
  that many classes, all of them where it has fewer; 1 and 5 shots):
  `few_shot_accuracy_<K>way_<N>shot`; see training.few_shot.
* "context_clusters" (models of sets): `context_cluster_accuracy`, how often a set's context mean
  is nearest to the mean of the other sets of its label (the synthetic 1-D families, digits), and
  a scatter of the context means in TensorBoard (`<split>/context_means`).

The line is also appended to WORKDIR/evaluation.jsonl and written to TensorBoard
under WORKDIR/tensorboard/evaluation.

Likelihood evaluation is batched so that batch × k stays under SAMPLES_PER_BATCH:
memory is bounded for any k.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from serving import startup

SAMPLES_PER_BATCH = 50_000
NUM_SAMPLES = 10_000  # Heusel et al.'s code (bioinf-jku/TTUR) recommends at least 10 000 for FID
SAMPLE_QUALITY_FLAGS = ("num_samples", "feature_extractor", "inception_weights", "classifier_epochs",
                        "classifier_max_examples")
SAMPLE_QUALITY_SCALARS = ("fid", "classifier_score", "modes_covered", "class_kl", "fid_floor", "classifier_accuracy")
QUICK_EXAMPLES = {"likelihood": 500, "exact_likelihood": 2000}  # test images of README's table, for `command`
INCEPTION_WEIGHTS_FIX = ("a Keras InceptionV3 weights file (with the top); on a machine with internet, "
                         "keras.applications.InceptionV3(weights=\"imagenet\") downloads it to "
                         "~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels.h5")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="the --workdir of a training.fit run")
    parser.add_argument("--k", type=int, default=5000,
                        help="importance samples per example of likelihood models (Burda et al.: 5000); "
                             "models with an exact likelihood ignore it")
    parser.add_argument("--max_examples", type=int, help="evaluate only the first N examples of the split "
                                                          "(and search only the first N train images for neighbours)")
    parser.add_argument("--split", default="test", choices=("test", "eval", "train"),
                        help="which role's split of the run's dataset")
    parser.add_argument("--batch_size", type=int,
                        help=f"default: max(1, {SAMPLES_PER_BATCH} // k), at most 100 (100 without likelihood)")
    parser.add_argument("--sample_quality", action="store_true",
                        help="measure sample quality even if the model does not declare it (e.g. a VAE)")
    parser.add_argument("--num_samples", type=int,
                        help=f"samples for sample quality, from the seeds 0 … N−1 (default {NUM_SAMPLES})")
    parser.add_argument("--feature_extractor", choices=("classifier", "inception"),
                        help="features for FID: the cached dataset classifier (default) or Inception-v3")
    parser.add_argument("--inception_weights", metavar="PATH", help="local InceptionV3 weights, for inception")
    parser.add_argument("--classifier_epochs", type=int,
                        help="train the classifier this many epochs (default 3; a separate cache file)")
    parser.add_argument("--classifier_max_examples", type=int,
                        help="train the classifier on the first N train examples (quick runs; a separate cache file)")
    parser.add_argument("--ais_steps", type=int, help="annealed importance sampling with this many annealing steps "
                                                      "(models whose entry declares \"ais\"; Wu et al.: thousands)")
    parser.add_argument("--ais_chains", type=int, default=16, help="AIS chains per image (default 16)")
    parser.add_argument("--ais_observation_stddev", type=float,
                        help="σ of the Gaussian observation model p(x | z) = N(x; G(z), σ² I) for models that have one "
                             "(GANs; Wu et al. choose it on validation data)")
    parser.add_argument("--bdmc_examples", type=int, default=10,
                        help="examples simulated from the model for the bidirectional check of AIS (0: none)")
    parser.add_argument("--episodes", type=int, default=100,
                        help="few-shot episodes per setting of models of sets (Edwards & Storkey: 100)")
    parser.add_argument("--no_download", action="store_true", help="fail instead of downloading missing data")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2, 3),
                        help="Keras progress: 0 silent, 1 bar, 2 one line; 3 as 2, plus TensorFlow's own logs")
    return parser.parse_args(argv)


def flag_error(args) -> str | None:
    """What is wrong with the flags, and how to fix it; None when nothing is."""
    if args.k < 1 or (args.max_examples is not None and args.max_examples < 1):
        return "--k and --max_examples must be positive integers"
    if args.episodes < 1:
        return "--episodes must be a positive integer (Edwards & Storkey average 100)"
    if args.ais_steps is not None and (args.ais_steps < 1 or args.ais_chains < 1 or args.bdmc_examples < 0):
        return "--ais_steps and --ais_chains must be positive integers, --bdmc_examples at least 0"
    if args.ais_observation_stddev is not None and not (args.ais_steps and args.ais_observation_stddev > 0):
        return "--ais_observation_stddev needs --ais_steps and a positive value"
    if args.num_samples is not None and args.num_samples < 2:
        return f"--num_samples must be at least 2 (FID needs a covariance); the default is {NUM_SAMPLES}"
    if any(value is not None and value < 1 for value in (args.classifier_epochs, args.classifier_max_examples)):
        return "--classifier_epochs and --classifier_max_examples must be positive integers"
    if args.feature_extractor == "inception":
        if args.classifier_epochs is not None or args.classifier_max_examples is not None:
            return "--classifier_epochs and --classifier_max_examples train the classifier; drop them for inception"
        if not args.inception_weights:
            return f"--feature_extractor inception needs --inception_weights PATH, {INCEPTION_WEIGHTS_FIX}"
        if not os.path.isfile(args.inception_weights):
            return f"--inception_weights {args.inception_weights}: no such file; pass {INCEPTION_WEIGHTS_FIX}"
    elif args.inception_weights:
        return "--inception_weights is used only with --feature_extractor inception; add that flag"
    return None


def command(workdir, evaluation, download: bool = True) -> str:
    """This CLI's command line for a run whose entry declares `evaluation` (`ModelSpec.evaluation`), as
    training prints it at the end: what the entry measures, on the first test images where that is slow."""
    flags = [f"--max_examples {QUICK_EXAMPLES[kind]}" for kind in evaluation if kind in QUICK_EXAMPLES][:1]
    return " ".join(["python -m training.evaluate", str(workdir), *flags, *([] if download else ["--no_download"])])


def group_per_layer(logs: dict) -> dict:
    """{"active_units_1": 3, "active_units_2": 5, "nll": 90} → {"active_units": [3, 5], "nll": 90}."""
    grouped: dict = {}
    for name in sorted(logs, key=lambda key: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]):
        match = re.fullmatch(r"(.+)_(\d+)", name)
        if match:
            grouped.setdefault(match.group(1), []).append(logs[name])
        else:
            grouped[name] = logs[name]
    return grouped


def _rounded(value):
    return round(float(value), 4) if isinstance(value, float) else value


def _feature_extractor(args, dataset: str):
    from training import sample_quality

    if args.feature_extractor == "inception":
        try:
            return sample_quality.inception_extractor(args.inception_weights)
        except sample_quality.SampleQualityError as error:
            raise sample_quality.SampleQualityError(f"--inception_weights: {error}") from None
    return sample_quality.classifier_extractor(dataset, _classifier_settings(args), download=not args.no_download)


def _classifier_settings(args):
    from training import sample_quality

    training = {"epochs": args.classifier_epochs, "max_examples": args.classifier_max_examples}
    return sample_quality.ClassifierSettings(**{name: value for name, value in training.items() if value})


def _captioned_sets(dataset: str, split: str, max_examples: int | None, download: bool) -> dict:
    """"held_in" and "held_out" → (grey canvases [N, H, W, 1], caption strings [N]): the split of `dataset`
    and of its held-out companion (`training.captions.HELD_OUT_DATASETS`; its test split when `split`
    is train, which it lacks), each read in one pass so that canvas i goes with caption i."""
    import numpy as np

    from training import captions, data
    from zoo.registry import DatasetSpec

    held_out = captions.HELD_OUT_DATASETS.get(dataset)
    if held_out is None:
        raise data.DataError(f"caption accuracy reads the digits MNIST captions name where they place them, so it "
                             f"needs a run on {', '.join(captions.HELD_OUT_DATASETS)}, not {dataset!r}; "
                             f"train with --dataset mnist_captions")
    sets = {}
    for name, (source, role) in (("held_in", (dataset, split)),
                                 ("held_out", (held_out, "test" if split == "train" else split))):
        batches, examples = data.load(DatasetSpec(source, binarize=False, captions=True), role, 500,
                                      max_examples=max_examples, download=download)
        read = list(batches.take(data.steps(examples, 500, "test")).as_numpy_iterator())
        sets[name] = (np.concatenate([batch["image"] for batch in read]),
                      [text for batch in read for text in batch["caption"]])
    return sets


AIS_SEED = 20170401  # seeds the AIS chains of batch i by (AIS_SEED, i), and the BDMC check by (AIS_SEED, −1);
                     # a conditional model folds in the position of the condition
ANNEALED = ("ais", "conditional_ais")  # the evaluations that --ais_steps runs


def _annealed_importance_sampling(model, batches, args, conditional: bool) -> dict:
    """The "ais" metrics of the module docstring over `batches` of the split, and the BDMC check; for a
    "conditional_ais" model, those of log p(y | x) under each of its conditions, suffixed with its name
    where it has several (`ais_nll_given_1` …)."""
    import numpy as np
    import tensorflow as tf

    from zoo.common import ais

    conditions = tuple(model.ais_conditions()) if conditional else (None,)

    def density(batch, condition):
        return model if condition is None else model.conditioned_density(batch, condition)

    def named(name, condition):
        return name if len(conditions) == 1 else f"{name}_{condition}"

    def seed(batch_index, position):
        seed = tf.constant([AIS_SEED, batch_index], tf.int32)
        return tf.random.experimental.stateless_fold_in(seed, position) if conditional else seed

    annealers = {condition: ais.Annealer(lambda batch, condition=condition: density(batch, condition))
                 for condition in conditions}  # each traced once, for all its batches and the BDMC check
    runs = {condition: ([], [], []) for condition in conditions}
    first = None
    for index, batch in enumerate(batches):
        first = batch if first is None else first
        for position, condition in enumerate(conditions):
            estimate = annealers[condition].log_marginal(batch, batch["image"], args.ais_chains, args.ais_steps,
                                                         seed(index, position))
            for values, value in zip(runs[condition], (estimate.log_marginal, estimate.standard_error,
                                                       estimate.acceptance)):
                values.append(value.numpy())
    metrics = {}
    for position, condition in enumerate(conditions):
        estimates, errors, acceptance = (np.concatenate(values) for values in runs[condition])
        metrics.update({named("ais_nll", condition): -float(estimates.mean()),
                        named("ais_standard_error", condition): float(np.sqrt(np.sum(errors**2)) / len(errors)),
                        named("ais_acceptance", condition): float(acceptance.mean())})
        if args.bdmc_examples:
            simulated_from = {name: value[:args.bdmc_examples] for name, value in first.items()}
            forward, reverse = annealers[condition].bidirectional(simulated_from, args.bdmc_examples, args.ais_chains,
                                                                  args.ais_steps, seed(-1, position))
            metrics.update({named("bdmc_forward", condition): float(tf.reduce_mean(forward.log_marginal)),
                            named("bdmc_reverse", condition): float(tf.reduce_mean(reverse.log_marginal)),
                            named("bdmc_gap", condition): float(tf.reduce_mean(reverse.log_marginal
                                                                               - forward.log_marginal))})
    return metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    startup.quiet_tensorflow(show=args.verbose == 3)
    problem = flag_error(args)
    if problem:
        return _fail(problem)

    import tensorflow as tf

    import zoo
    from export import runs
    from training import data, few_shot, nearest_neighbour, sample_quality
    from zoo import contract

    try:
        spec, config, model, epochs = runs.load_trained_model(args.workdir)
        likelihood = "likelihood" in spec.evaluation
        measure_samples = "sample_quality" in spec.evaluation or args.sample_quality
        read_captions = "caption_accuracy" in spec.evaluation
        find_neighbours = "feature_1nn" in spec.evaluation
        judge_contexts = bool({"few_shot", "context_clusters"} & set(spec.evaluation))
        classifier_flags = ("classifier_epochs", "classifier_max_examples") if read_captions else ()
        given = [f"--{flag}" for flag in SAMPLE_QUALITY_FLAGS
                 if getattr(args, flag) is not None and flag not in classifier_flags]
        if given and not measure_samples:
            return _fail(f"{', '.join(given)}: sample-quality flags, but {spec.name} measures only "
                         f"{', '.join(spec.evaluation)} by default; add --sample_quality")
        conditional = "conditional_ais" in spec.evaluation
        if args.ais_steps and not set(ANNEALED) & set(spec.evaluation):
            capable = ", ".join(name for name in zoo.names() if set(ANNEALED) & set(zoo.get(name).evaluation))
            return _fail(f"--ais_steps: {spec.name} has no decoder density to anneal to (its entry declares neither "
                         f"\"ais\" nor \"conditional_ais\"); models that do: {capable}")
        noisy = isinstance(model, contract.ObservationNoise)
        if args.ais_observation_stddev and not noisy:
            return _fail(f"--ais_observation_stddev: {spec.name}'s decoder density is its own, not a Gaussian "
                         f"around a generator; drop the flag")
        default_batch = max(1, min(100, SAMPLES_PER_BATCH // args.k)) if likelihood else 100
        dataset_spec = spec.dataset(config)
        if find_neighbours:
            nearest_neighbour.check(dataset_spec.name, args.split)
        batch_size = args.batch_size or default_batch
        dataset, examples = data.load(dataset_spec, args.split, batch_size,
                                      max_examples=args.max_examples, download=not args.no_download)
        data.check_image_shape(dataset, dataset_spec, config.image_shape)
        if args.ais_steps and conditional and args.bdmc_examples > min(batch_size, examples):
            return _fail(f"--bdmc_examples {args.bdmc_examples}: {spec.name} checks AIS on the split's first batch "
                         f"with its outputs simulated, so at most the batch size ({min(batch_size, examples)}); lower "
                         f"it or raise --batch_size")
        steps = data.steps(examples, batch_size, args.split)  # the train role repeats: one pass of it
        if measure_samples and examples < 4:
            return _fail(f"sample quality compares two halves of the real images, so it needs at least 4; "
                         f"the split has {examples}: raise --max_examples")
        extractor = _feature_extractor(args, dataset_spec.name) if measure_samples else None
        if read_captions:
            captioned = _captioned_sets(dataset_spec.name, args.split, args.max_examples, not args.no_download)
            classifier, classifier_accuracy = sample_quality.load_classifier(
                "mnist", _classifier_settings(args), download=not args.no_download)
    except (runs.WorkdirError, data.DataError, sample_quality.SampleQualityError) as error:
        return _fail(error)

    if likelihood:
        model.use_importance_samples(args.k)
    model.compile(jit_compile=config.jit_compile)
    logs = model.evaluate(dataset, steps=steps, return_dict=True, verbose=min(args.verbose, 2))
    result = {
        "model": spec.name,
        "split": data.split_name(dataset_spec, args.split, args.max_examples),
        **({"k": args.k} if likelihood else {}),
        "examples": examples,
        "epochs": epochs,
        **group_per_layer({name: round(float(value), 4) for name, value in logs.items()}),
    }
    scalars = {f"{name}_k{args.k}" if likelihood else name: float(value) for name, value in logs.items()}
    if read_captions:
        from training import captions

        accuracy = captions.caption_accuracy(model.sample_from_caption, classifier,
                                             {name: texts for name, (_, texts) in captioned.items()})
        reading = {"caption_accuracy_held_in": accuracy["held_in"], "caption_accuracy_held_out": accuracy["held_out"],
                   "caption_accuracy_real": captions.fraction_read(classifier, *captioned["held_in"]),
                   "classifier_accuracy": classifier_accuracy}
        result.update({name: round(value, 4) for name, value in reading.items()})
        scalars.update(reading)
    if args.ais_steps:
        if noisy:
            if args.ais_observation_stddev:
                model.use_observation_stddev(args.ais_observation_stddev)
            result["ais_observation_stddev"] = model.observation_stddev
        annealed = _annealed_importance_sampling(model, dataset.take(steps), args, conditional)
        result.update(group_per_layer({name: _rounded(value) for name, value in annealed.items()}))
        scalars.update({f"{name}_m{args.ais_steps}": value for name, value in annealed.items()})
    if find_neighbours:
        neighbours = nearest_neighbour.measure(model.encode_features, dataset_spec, args.split,
                                               max_examples=args.max_examples, download=not args.no_download)
        result.update({name: _rounded(value) for name, value in neighbours.items()})
        scalars.update({name: neighbours[name] for name in ("nearest_neighbour_accuracy",
                                                            "nearest_neighbour_accuracy_euclidean")})
    if judge_contexts:
        sets, labels = few_shot.evaluation_sets(dataset_spec, args.split, args.max_examples, not args.no_download)
        judged = few_shot.measure(model.context, sets, labels, few_shot="few_shot" in spec.evaluation,
                                  cluster="context_clusters" in spec.evaluation, episodes=args.episodes)
        result.update({name: _rounded(value) for name, value in judged.items()})
        scalars.update(judged)
        if "context_clusters" in spec.evaluation:
            scatter = few_shot.scatter_image(few_shot.contexts(model.context, sets)[0], labels)
    if measure_samples:
        real = sample_quality.real_images(dataset_spec.name, args.split, max_examples=args.max_examples,
                                          download=not args.no_download)
        quality = sample_quality.measure(model.sample, real, extractor, args.num_samples or NUM_SAMPLES)
        result.update({name: _rounded(value) for name, value in quality.items()})
        scalars.update({f"{name}_{extractor.name}": quality[name]
                        for name in SAMPLE_QUALITY_SCALARS if quality[name] is not None})
    line = json.dumps(result)
    print(line)
    with open(f"{args.workdir}/evaluation.jsonl", "a") as log:
        log.write(line + "\n")
    writer = tf.summary.create_file_writer(str(runs.tensorboard_dir(args.workdir) / "evaluation"))
    with writer.as_default():
        for name, value in scalars.items():
            tf.summary.scalar(f"{args.split}/{name}", float(value), step=epochs)
        if "context_clusters" in spec.evaluation:
            tf.summary.image(f"{args.split}/context_means", scatter[None], step=epochs)
    writer.flush()
    return 0


def _fail(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
