# bilm on a GPU: the official TensorFlow GPU image already has TensorFlow
# with CUDA, so only the package and the test runner are installed.
FROM tensorflow/tensorflow:latest-gpu
WORKDIR /bilm
COPY . /bilm
RUN pip install --no-cache-dir -e ".[test]"
CMD ["python", "-m", "pytest", "tests"]
