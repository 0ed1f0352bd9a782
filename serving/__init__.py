"""TF Serving's gRPC and REST APIs over exported zoo models, and a client for them.

    python -m serving.server --model_name vae --model_base_path runs/vae/serving/vae
    python -m serving.client --server localhost:8500 --model vae --num_samples 16 --out samples.png

`server` wires the pieces: `manager` (which versions are loaded), `servable` (one
loaded version and checked calls), `service` (what both front ends share),
`grpc_api` and `rest_api` (the wire formats), `batching`, `metrics` and
`config_files` (TF Serving's text-format configs); `client` and `images` (its PNG
grids) talk to a server; `startup` keeps TensorFlow's start-up logs out of every
command's output (training and export use it too). `deploy/` runs the same model folders under the real
`tensorflow_model_server`. See docs/serving.md.

This package imports nothing of `zoo`, `training` or `export`: the server and client
run beside a SavedModel alone (tests/test_dependencies.py checks it).
"""
