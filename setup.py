from setuptools import find_packages, setup

setup(
    name="bilm",
    version="0.2.0",
    description="ELMo's bidirectional language model (biLM) on TensorFlow 2.x",
    url="https://github.com/allenai/bilm-tf",
    packages=find_packages(include=["bilm", "bilm.*"]),
    package_data={"bilm": ["default_model/*"]},
    python_requires=">=3.10",
    # TensorFlow comes from an extra: the CPU and GPU builds are different
    # distributions, and the GPU image of the Dockerfile already has one.
    install_requires=["h5py", "numpy"],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "test": ["pytest", "pytest-xdist"],
    },
    entry_points={"console_scripts": ["bilm=bilm.cli:main"]},
    license="Apache-2.0",
)
