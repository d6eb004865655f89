# The image scripts/cluster/kubeflow_tfjob.yaml runs: this project installed
# with TensorFlow (CPU), train.py in the working directory.
#
#   docker build -t REGISTRY/tf1-mnist-vae:latest .
#   docker push REGISTRY/tf1-mnist-vae:latest
FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY mnist_vae ./mnist_vae
RUN pip install --no-cache-dir '.[cpu]'
COPY train.py evaluate.py export.py generate.py ./
COPY configs ./configs
ENV TF_CPP_MIN_LOG_LEVEL=2
CMD ["python", "train.py", "--helpshort"]
