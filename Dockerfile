# bilm on a GPU: the official TensorFlow GPU image already has TensorFlow
# with CUDA, so only the package and the test runner are installed.
# Pinned to the TensorFlow release the test suite last passed on (README:
# "tested with 2.21"); move both together.
FROM tensorflow/tensorflow:2.21.0-gpu
WORKDIR /bilm
COPY . /bilm
RUN pip install --no-cache-dir -e ".[test]"
CMD ["python", "-m", "pytest", "tests"]
